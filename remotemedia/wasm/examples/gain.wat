;; gain: multiplies float32 audio samples by the f32 global "gain"
;; (config={"gain": 0.5}). Stateless. ABI: see remotemedia.wasm.
(module
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 1024))
  (global $gain (export "gain") (mut f32) (f32.const 1.0))

  ;; alloc(size) -> address of size free bytes (16-aligned), 0 when memory cannot grow
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

  ;; process(samples, channels, per_channel, sample_rate) -> 0
  (func (export "process") (param $p i32) (param $channels i32) (param $n i32) (param $rate i32) (result i32)
    (local $end i32) (local $end4 i32) (local $g4 v128)
    (local.set $end (i32.add (local.get $p) (i32.shl (i32.mul (local.get $channels) (local.get $n)) (i32.const 2))))
    (local.set $end4 (i32.sub (local.get $end) (i32.const 15)))
    (local.set $g4 (f32x4.splat (global.get $gain)))
    ;; four samples at a time, then the rest one by one
    (block $done4
      (loop $four
        (br_if $done4 (i32.ge_s (local.get $p) (local.get $end4)))
        (v128.store (local.get $p) (f32x4.mul (v128.load (local.get $p)) (local.get $g4)))
        (local.set $p (i32.add (local.get $p) (i32.const 16)))
        (br $four)))
    (block $done
      (loop $one
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (f32.store (local.get $p) (f32.mul (f32.load (local.get $p)) (global.get $gain)))
        (local.set $p (i32.add (local.get $p) (i32.const 4)))
        (br $one)))
    (i32.const 0))
)
