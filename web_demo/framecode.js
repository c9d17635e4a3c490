// Frame counters drawn into video frames as big black and white blocks, and
// read back after a lossy codec: the benchmark's way to know which frame came
// back, and so its round-trip time, with nothing but pixels.
//
// The grid is 8 x 4 blocks on mid-grey: 16 bits of the counter, 8 check bits,
// and a fixed sync row of 8 blocks. The sync row gives the black and white
// levels the codec left, and with the check bits tells a frame that carries a
// code from one that does not (an effect, a half-decoded key frame).

const COLS = 8;
const ROWS = 4;
const COUNTER_BITS = 16;
const CHECK_BITS = 8;
const SYNC = [1, 0, 1, 0, 0, 1, 0, 1];
const GREY = 128;
// White minus black at the sync blocks below this: not a code.
const MIN_CONTRAST = 64;

/** The counter's check byte: a frame whose check bits disagree is refused. */
function check(counter) {
  return ((counter & 0xff) ^ (counter >> 8) ^ 0xa5) & 0xff;
}

/** The bits of one frame, block by block (1 is white). */
function bitsOf(counter) {
  const bits = [];
  for (let i = COUNTER_BITS - 1; i >= 0; i -= 1) bits.push((counter >> i) & 1);
  const sum = check(counter);
  for (let i = CHECK_BITS - 1; i >= 0; i -= 1) bits.push((sum >> i) & 1);
  return bits.concat(SYNC);
}

/**
 * Where the blocks go in a width x height frame: the block side, the grid's
 * top-left corner, and each block's rectangle as fractions of the frame (so a
 * frame scaled on the way, as WebRTC does under load, still decodes).
 */
export function layout(width, height) {
  const side = Math.floor(Math.min(width / (COLS + 2), height / (ROWS + 2)));
  const left = Math.floor((width - COLS * side) / 2);
  const top = Math.floor((height - ROWS * side) / 2);
  const blocks = [];
  for (let row = 0; row < ROWS; row += 1) {
    for (let col = 0; col < COLS; col += 1) {
      blocks.push({
        x: (left + col * side) / width,
        y: (top + row * side) / height,
        w: side / width,
        h: side / height,
      });
    }
  }
  return { side, left, top, width, height, blocks };
}

/** Draws ``counter`` on ``ctx`` (a width x height canvas), with a band that moves so the encoder has motion to code. */
export function draw(ctx, grid, counter) {
  const { width, height, side, left, top } = grid;
  ctx.fillStyle = `rgb(${GREY},${GREY},${GREY})`;
  ctx.fillRect(0, 0, width, height);
  const band = Math.max(8, Math.floor(top / 2));
  const x = (counter * 4) % width;
  const gradient = ctx.createLinearGradient(x - width / 4, 0, x + width / 4, 0);
  gradient.addColorStop(0, "#3a6ea5");
  gradient.addColorStop(0.5, "#e0b040");
  gradient.addColorStop(1, "#3a6ea5");
  ctx.fillStyle = gradient;
  ctx.fillRect(0, Math.max(0, top - band - 4), width, band);
  bitsOf(counter & 0xffff).forEach((bit, i) => {
    ctx.fillStyle = bit ? "#fff" : "#000";
    ctx.fillRect(left + (i % COLS) * side, top + Math.floor(i / COLS) * side, side, side);
  });
}

/** Mean luma of the middle half of each block in ``image`` (an ImageData of the whole frame). */
function blockMeans(image, grid) {
  const { width, height, data } = image;
  return grid.blocks.map((b) => {
    const x0 = Math.round((b.x + b.w / 4) * width);
    const x1 = Math.round((b.x + (3 * b.w) / 4) * width);
    const y0 = Math.round((b.y + b.h / 4) * height);
    const y1 = Math.round((b.y + (3 * b.h) / 4) * height);
    let sum = 0;
    let count = 0;
    for (let y = y0; y < y1; y += 2) {
      for (let x = x0; x < x1; x += 2) {
        const i = (y * width + x) * 4;
        sum += 0.299 * data[i] + 0.587 * data[i + 1] + 0.114 * data[i + 2];
        count += 1;
      }
    }
    return count ? sum / count : GREY;
  });
}

/** The counter in ``image`` (ImageData of a frame drawn by :func:`draw`, any scale), or null when there is none. */
export function decode(image, grid) {
  const means = blockMeans(image, grid);
  const sync = means.slice(COUNTER_BITS + CHECK_BITS);
  const whites = sync.filter((_, i) => SYNC[i] === 1);
  const blacks = sync.filter((_, i) => SYNC[i] === 0);
  const white = Math.min(...whites);
  const black = Math.max(...blacks);
  if (white - black < MIN_CONTRAST) return null;
  const threshold = (white + black) / 2;
  const bits = means.map((m) => (m > threshold ? 1 : 0));
  let counter = 0;
  for (let i = 0; i < COUNTER_BITS; i += 1) counter = (counter << 1) | bits[i];
  let sum = 0;
  for (let i = COUNTER_BITS; i < COUNTER_BITS + CHECK_BITS; i += 1) sum = (sum << 1) | bits[i];
  return sum === check(counter) ? counter : null;
}
