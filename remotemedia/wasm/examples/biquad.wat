;; biquad: a second-order IIR filter (direct form I) on float32 audio, with
;; its history kept per channel across frames (up to 8 channels):
;;   y[n] = b0*x[n] + b1*x[n-1] + b2*x[n-2] - a1*y[n-1] - a2*y[n-2]
;; Coefficients are the f32 globals b0 b1 b2 a1 a2, normalized (a0 = 1);
;; remotemedia.wasm.lowpass() computes a low-pass's. ABI: see remotemedia.wasm.
(module
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 1024))
  (global $b0 (export "b0") (mut f32) (f32.const 1.0))
  (global $b1 (export "b1") (mut f32) (f32.const 0.0))
  (global $b2 (export "b2") (mut f32) (f32.const 0.0))
  (global $a1 (export "a1") (mut f32) (f32.const 0.0))
  (global $a2 (export "a2") (mut f32) (f32.const 0.0))
  ;; history of channel c at 16*c: x1 x2 y1 y2 (addresses 0..127, below the heap)

  (func (export "alloc") (param $size i32) (result i32)
    (local $addr i32) (local $end i32)
    (if (i32.gt_u (local.get $size) (i32.const 0x7fff0000)) (then (return (i32.const 0))))
    (local.set $addr (global.get $heap))
    (local.set $end (i32.and (i32.add (i32.add (local.get $addr) (local.get $size)) (i32.const 15)) (i32.const -16)))
    (if (i32.gt_u (local.get $end) (i32.shl (memory.size) (i32.const 16)))
      (then
        (if (i32.eq
              (memory.grow (i32.shr_u (i32.sub (i32.add (local.get $end) (i32.const 65535))
                                               (i32.shl (memory.size) (i32.const 16)))
                                      (i32.const 16)))
              (i32.const -1))
          (then (return (i32.const 0))))))
    (global.set $heap (local.get $end))
    (local.get $addr))

  ;; process(samples, channels, per_channel, sample_rate) -> 0, or 1 for more than 8 channels
  (func (export "process") (param $p i32) (param $channels i32) (param $n i32) (param $rate i32) (result i32)
    (local $c i32) (local $h i32) (local $q i32) (local $end i32)
    (local $x f32) (local $y f32) (local $x1 f32) (local $x2 f32) (local $y1 f32) (local $y2 f32)
    (if (i32.gt_u (local.get $channels) (i32.const 8)) (then (return (i32.const 1))))
    (block $channels_done
      (loop $channel
        (br_if $channels_done (i32.ge_u (local.get $c) (local.get $channels)))
        (local.set $h (i32.shl (local.get $c) (i32.const 4)))
        (local.set $x1 (f32.load offset=0 (local.get $h)))
        (local.set $x2 (f32.load offset=4 (local.get $h)))
        (local.set $y1 (f32.load offset=8 (local.get $h)))
        (local.set $y2 (f32.load offset=12 (local.get $h)))
        (local.set $q (i32.add (local.get $p) (i32.shl (i32.mul (local.get $c) (local.get $n)) (i32.const 2))))
        (local.set $end (i32.add (local.get $q) (i32.shl (local.get $n) (i32.const 2))))
        (block $done
          (loop $sample
            (br_if $done (i32.ge_u (local.get $q) (local.get $end)))
            (local.set $x (f32.load (local.get $q)))
            (local.set $y
              (f32.sub
                (f32.sub
                  (f32.add
                    (f32.add (f32.mul (global.get $b0) (local.get $x)) (f32.mul (global.get $b1) (local.get $x1)))
                    (f32.mul (global.get $b2) (local.get $x2)))
                  (f32.mul (global.get $a1) (local.get $y1)))
                (f32.mul (global.get $a2) (local.get $y2))))
            (f32.store (local.get $q) (local.get $y))
            (local.set $x2 (local.get $x1)) (local.set $x1 (local.get $x))
            (local.set $y2 (local.get $y1)) (local.set $y1 (local.get $y))
            (local.set $q (i32.add (local.get $q) (i32.const 4)))
            (br $sample)))
        (f32.store offset=0 (local.get $h) (local.get $x1))
        (f32.store offset=4 (local.get $h) (local.get $x2))
        (f32.store offset=8 (local.get $h) (local.get $y1))
        (f32.store offset=12 (local.get $h) (local.get $y2))
        (local.set $c (i32.add (local.get $c) (i32.const 1)))
        (br $channel)))
    (i32.const 0))
)
