"""Services of a user's own, for ``--services services_sample:SERVICES`` in tests/test_services.py."""

from remotemedia import Node, VideoFrame


class Brighten(Node):
    """Adds ``amount`` to every pixel; ``configure(amount=...)`` changes it while running."""

    choices = {"amount": (0, 50, 100)}
    takes = ("video",)

    def __init__(self, amount: int = 50) -> None:
        super().__init__()
        self.configure(amount)

    def configure(self, amount: int) -> None:
        if not isinstance(amount, int) or not 0 <= amount <= 255:
            raise ValueError(f"amount must be an integer from 0 to 255, not {amount!r}")
        self.amount = amount

    def options(self) -> dict:
        return {"amount": self.amount}

    def process(self, frame: VideoFrame) -> VideoFrame:
        image = (frame.image.astype("int16") + self.amount).clip(0, 255).astype("uint8")
        return VideoFrame(image, frame.format, frame.timestamp)


class Broken(Node):
    """Fails on its first frame, as a buggy service would."""

    takes = ("video",)

    def process(self, frame):
        raise RuntimeError("this service is broken on purpose")


def announce(greeting: str = "hello") -> Node:
    """Says its greeting once per frame, as text on the data channel."""

    class Announce(Node):
        takes = ("video",)

        def process(self, frame):
            return f"{greeting} {type(frame).__name__}"

    return Announce()


SERVICES = {"brighten": Brighten, "broken": Broken, "announce": announce}
