/*
 * grayscale: the one example module built from C. Every pixel's first three
 * bytes become its luma, (77 R + 150 G + 29 B) >> 8; a fourth (alpha) is
 * kept; 1-byte pixels are gray already. ABI: see remotemedia.wasm.
 *
 * Built with Debian's clang and lld (apt-get install clang lld), no libc:
 *
 *   clang --target=wasm32 -O2 -nostdlib -Wl,--no-entry -o grayscale.wasm grayscale.c
 *
 * wasm-ld exports the linear memory as "memory" by itself; the two functions
 * below are the exports the ABI asks for.
 */

extern unsigned char __heap_base; /* first free byte, placed by the linker */
static unsigned long heap = 0;

/* alloc(size) -> address of size free bytes, 0 when memory cannot grow. */
__attribute__((export_name("alloc"))) unsigned long alloc(unsigned long size) {
    if (heap == 0)
        heap = (unsigned long)&__heap_base;
    unsigned long addr = (heap + 15) & ~15ul;
    if (size > 0x7fff0000ul)
        return 0;
    unsigned long end = addr + size;
    unsigned long have = __builtin_wasm_memory_size(0) << 16;
    if (end > have && __builtin_wasm_memory_grow(0, (end - have + 65535) >> 16) == (unsigned long)-1)
        return 0;
    heap = end;
    return addr;
}

/* process(pixels, width, rows, bytes_per_pixel) -> 0, or 2 for 2-byte pixels. */
__attribute__((export_name("process"))) int process(unsigned char *p, int width, int rows, int channels) {
    if (channels == 1)
        return 0;
    if (channels < 3)
        return 2;
    unsigned char *end = p + (unsigned long)width * rows * channels;
    for (; p < end; p += channels) {
        unsigned char y = (unsigned char)((77 * p[0] + 150 * p[1] + 29 * p[2]) >> 8);
        p[0] = p[1] = p[2] = y;
    }
    return 0;
}
