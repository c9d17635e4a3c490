;; invert: a video negative, every byte v becomes 255 - v (which is ~v),
;; sixteen bytes at a time. Stateless. ABI: see remotemedia.wasm.
(module
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 1024))

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

  ;; process(pixels, width, rows, bytes_per_pixel) -> 0
  (func (export "process") (param $p i32) (param $w i32) (param $h i32) (param $c i32) (result i32)
    (local $end i32) (local $end16 i32)
    (local.set $end (i32.add (local.get $p) (i32.mul (i32.mul (local.get $w) (local.get $h)) (local.get $c))))
    (local.set $end16 (i32.sub (local.get $end) (i32.const 15)))
    (block $done16
      (loop $sixteen
        (br_if $done16 (i32.ge_s (local.get $p) (local.get $end16)))
        (v128.store (local.get $p) (v128.not (v128.load (local.get $p))))
        (local.set $p (i32.add (local.get $p) (i32.const 16)))
        (br $sixteen)))
    (block $done
      (loop $one
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (i32.store8 (local.get $p) (i32.xor (i32.load8_u (local.get $p)) (i32.const 255)))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $one)))
    (i32.const 0))
)
