"""
Flow-control figures the client and the executor must agree on.

They are part of the call conversation's contract, like the message kinds:
if the two ends disagreed (an executor window smaller than the client's, a
grant size the client discards), duplex streams would stall or be refused.
Both ends import them from here; neither defines its own.
"""

__all__ = ["STREAM_WINDOW", "INPUT_WINDOW", "MEDIA_DRAIN", "MAX_WAITING_FRAMES"]

#: Items a streamed call may have in flight towards the client before the
#: client grants more credit (it grants half a window at a time).
STREAM_WINDOW = 16

#: Inputs the client may send ahead of what the remote method has consumed;
#: the executor grants them back as the method reads (and relays obey it too).
INPUT_WINDOW = 16

#: Seconds either end waits, after a stream's end, for media frames still on
#: their way on the tracks (a lost frame never comes).
MEDIA_DRAIN = 2.0

#: Frames from a media track that may wait for a slow consumer on either end;
#: later ones are dropped (a track cannot be told to wait).
MAX_WAITING_FRAMES = 64
