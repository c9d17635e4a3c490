;; threshold: black and white by luma. luma = (77 R + 150 G + 29 B) >> 8
;; (the gray value itself for 1-byte pixels); a pixel whose luma is at least
;; the i32 global "threshold" (config={"threshold": 128}) becomes white,
;; others black; a fourth byte (alpha) is kept. Stateless. ABI: see remotemedia.wasm.
(module
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 1024))
  (global $threshold (export "threshold") (mut i32) (i32.const 128))

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

  ;; process(pixels, width, rows, bytes_per_pixel) -> 0, or 2 for 2-byte pixels
  (func (export "process") (param $p i32) (param $w i32) (param $h i32) (param $c i32) (result i32)
    (local $end i32) (local $luma i32) (local $v i32)
    (local.set $end (i32.add (local.get $p) (i32.mul (i32.mul (local.get $w) (local.get $h)) (local.get $c))))
    (if (i32.eq (local.get $c) (i32.const 1))
      (then
        (block $gray_done
          (loop $gray
            (br_if $gray_done (i32.ge_u (local.get $p) (local.get $end)))
            (i32.store8 (local.get $p)
              (select (i32.const 255) (i32.const 0)
                (i32.ge_s (i32.load8_u (local.get $p)) (global.get $threshold))))
            (local.set $p (i32.add (local.get $p) (i32.const 1)))
            (br $gray)))
        (return (i32.const 0))))
    (if (i32.lt_u (local.get $c) (i32.const 3)) (then (return (i32.const 2))))
    (block $done
      (loop $pixel
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $luma
          (i32.shr_u
            (i32.add
              (i32.add (i32.mul (i32.load8_u offset=0 (local.get $p)) (i32.const 77))
                       (i32.mul (i32.load8_u offset=1 (local.get $p)) (i32.const 150)))
              (i32.mul (i32.load8_u offset=2 (local.get $p)) (i32.const 29)))
            (i32.const 8)))
        (local.set $v (select (i32.const 255) (i32.const 0) (i32.ge_s (local.get $luma) (global.get $threshold))))
        (i32.store8 offset=0 (local.get $p) (local.get $v))
        (i32.store8 offset=1 (local.get $p) (local.get $v))
        (i32.store8 offset=2 (local.get $p) (local.get $v))
        (local.set $p (i32.add (local.get $p) (local.get $c)))
        (br $pixel)))
    (i32.const 0))
)
