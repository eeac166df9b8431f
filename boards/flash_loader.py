"""Boot-time weight loader: the weight image in the SPI flash -> a memory write port.

The iCE40 UP5K's SPRAM cannot be initialised by the bitstream, so on the iCEBreaker the
accelerator's weights are written into it after configuration: `shiftq flash` puts a
weight image (`boards/weight_image.py`, layout in docs/boards.md) into the board's
SPI flash at `FLASH_OFFSET`, and `FlashLoader` reads it back at every reset:

1. wake the flash: command 0xAB (release from deep power-down; the iCE40 may leave the
   flash powered down after configuration), then wait `tres1_cycles` clocks (tRES1,
   3 us on the iCEBreaker's W25Q128JV);
2. READ (0x03) + the 24-bit address `flash_addr`, then clock in bytes continuously:
3. the 16-byte header is compared byte by byte with the one this design expects
   (magic, version, flags, word width, design id, word count are all known when the
   hardware is elaborated); the first differing byte ends the read and raises `error`
   (an erased flash reads 0xFF, a stale image has another design id or word count);
4. the words follow, `ceil(word_bits / 8)` bytes each, least significant byte first:
   each completed word is presented on `wl_addr` / `wl_data` with `wl_en` high for one
   clock (addresses 0, 1, ..., n_words - 1 in order, one word every
   16 * clk_div * bytes_per_word clocks);
5. one clock after the last write, `done` rises and stays high (until reset);
   `error` likewise stays high after a bad header. `cs_n` is high (flash released)
   in both end states.

SPI mode 0, most significant bit first: `sck` idles low, `copi` changes after falling
edges, `cipo` is sampled on rising edges (in the system clock cycle that raises `sck`,
i.e. half an SPI period after the flash's falling-edge update). SPI clock = system clock
/ (2 * `clk_div`); `clk_div` = 1 gives the fastest, clk / 2. All outputs come straight
from flip-flops.
"""
from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from boards.weight_image import FLASH_OFFSET, HEADER_BYTES, header, word_bytes

__all__ = ["FlashLoader", "CMD_WAKE", "CMD_READ", "TRES1_S", "tres1_cycles"]

CMD_WAKE = 0xAB     # release from deep power-down
CMD_READ = 0x03     # read data (up to 50 MHz on the W25Q128JV; we run at <= clk / 2)
TRES1_S = 3e-6      # W25Q128JV: release from power-down to the next command


def tres1_cycles(clk_hz: float, t_s: float = TRES1_S) -> int:
    """Clocks of `clk_hz` covering `t_s` (plus one for the synchroniser-free margin)."""
    import math
    return int(math.ceil(t_s * clk_hz)) + 1


class FlashLoader(wiring.Component):
    """Copies the weight image from an SPI flash into a memory write port after reset.

    Parameters
    ----------
    word_bits, n_words, design_id:
        the image this design expects (its header must match byte for byte).
    flash_addr:
        byte address of the image in the flash (24 bits; default `FLASH_OFFSET`, 1 MiB).
    clk_div:
        system clocks per SPI half period (>= 1): SPI clock = clk / (2 * clk_div).
    tres1_cycles:
        system clocks to wait between the wake command and the READ (tRES1).

    Signature
    ---------
    sck : Out(1)
        SPI clock to the flash (mode 0: idles low).
    cs_n : Out(1, init=1)
        flash chip select, active low (high outside a command).
    copi : Out(1)
        controller out, peripheral in (flash IO0 / DI).
    cipo : In(1)
        controller in, peripheral out (flash IO1 / DO).
    wl_addr : Out(range(max(2, n_words)))
        word address of the write.
    wl_data : Out(word_bits)
        the word.
    wl_en : Out(1)
        write strobe, one clock per word.
    done : Out(1)
        every word written (stays high until reset).
    error : Out(1)
        the flash held no image for this design (bad magic, version, flags, word width,
        design id or word count); no word was written. Stays high until reset.
    """

    def __init__(self, *, word_bits: int, n_words: int, design_id: int, flash_addr: int = FLASH_OFFSET,
                 clk_div: int = 1, tres1_cycles: int = 37):
        if clk_div < 1:
            raise ValueError(f"clk_div must be >= 1 (SPI clock <= system clock / 2), not {clk_div}")
        if not 0 <= flash_addr < (1 << 24):
            raise ValueError(f"flash_addr {flash_addr:#x} needs more than the 24 address bits of READ 0x03")
        if tres1_cycles < 1:
            raise ValueError("tres1_cycles must be >= 1")
        self.word_bits, self.n_words, self.design_id = int(word_bits), int(n_words), int(design_id)
        self.flash_addr, self.clk_div, self.tres1_cycles = int(flash_addr), int(clk_div), int(tres1_cycles)
        self.header = header(self.word_bits, self.n_words, self.design_id)
        self.bytes_per_word = word_bytes(self.word_bits)
        super().__init__({
            "sck": Out(1),
            "cs_n": Out(1, init=1),
            "copi": Out(1),
            "cipo": In(1),
            "wl_addr": Out(range(max(2, self.n_words))),
            "wl_data": Out(self.word_bits),
            "wl_en": Out(1),
            "done": Out(1),
            "error": Out(1),
        })

    def cycles_estimate(self) -> int:
        """Clocks from reset to `done` (for the report: ~16 * clk_div per byte)."""
        nbytes = 1 + 4 + HEADER_BYTES + self.n_words * self.bytes_per_word
        return 16 * self.clk_div * nbytes + self.tres1_cycles + 8

    def elaborate(self, platform):
        m = Module()
        nb = self.bytes_per_word

        # ---- bit engine: one byte per 8 SCK periods, continuous while `run`
        run = Signal()
        tick = Signal()
        if self.clk_div == 1:
            m.d.comb += tick.eq(run)
        else:
            div = Signal(range(self.clk_div), init=self.clk_div - 1)
            with m.If(~run):
                m.d.sync += div.eq(self.clk_div - 1)
            with m.Elif(div == 0):
                m.d.sync += div.eq(self.clk_div - 1)
            with m.Else():
                m.d.sync += div.eq(div - 1)
            m.d.comb += tick.eq(run & (div == 0))
        shreg = Signal(8)           # out: bit 7 on copi; in: sampled bits shift in at bit 0
        rx_bit = Signal()
        bitcnt = Signal(3)
        strobe = Signal()           # the 8th falling edge: a byte is complete
        rx_byte = Signal(8)
        load = Signal()             # load `tx_byte` into the shifter at this strobe
        tx_byte = Signal(8)
        m.d.comb += [self.copi.eq(shreg[7]), rx_byte.eq(Cat(rx_bit, shreg[:7]))]
        with m.If(tick):
            with m.If(~self.sck):
                m.d.sync += [self.sck.eq(1), rx_bit.eq(self.cipo)]
            with m.Else():
                m.d.sync += [self.sck.eq(0), bitcnt.eq(bitcnt + 1), shreg.eq(Cat(rx_bit, shreg[:7]))]
                m.d.comb += strobe.eq(bitcnt == 7)
        with m.If(load):
            m.d.sync += [shreg.eq(tx_byte), bitcnt.eq(0)]

        # ---- control
        idx = Signal(range(max(HEADER_BYTES, 4) + 1))
        bidx = Signal(range(max(nb, 2)))
        count = Signal(range(max(2, self.n_words)))
        word = Signal(8 * nb)
        timer = Signal(range(self.tres1_cycles + 1))
        expect = Array(Const(b, 8) for b in self.header)
        # the address bytes from a shift register (a register, not a constant table indexed
        # by `idx`: Icarus never evaluates such a table's `always @*` while `idx` keeps its
        # initial value, so the first address byte would be X there)
        addr_sh = Signal(32, init=self.flash_addr << 8)
        new_word = Cat(word[8:], rx_byte)
        m.d.sync += self.wl_en.eq(0)

        with m.FSM(name="loader"):
            with m.State("START"):
                m.d.comb += [tx_byte.eq(CMD_WAKE), load.eq(1)]
                m.d.sync += self.cs_n.eq(0)
                m.next = "WAKE"
            with m.State("WAKE"):
                m.d.comb += run.eq(1)
                with m.If(strobe):
                    m.d.sync += [self.cs_n.eq(1), timer.eq(self.tres1_cycles)]
                    m.next = "TRES1"
            with m.State("TRES1"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    m.d.comb += [tx_byte.eq(CMD_READ), load.eq(1)]
                    m.d.sync += [self.cs_n.eq(0), idx.eq(0)]
                    m.next = "COMMAND"
            with m.State("COMMAND"):
                m.d.comb += run.eq(1)
                with m.If(strobe):
                    m.d.comb += [tx_byte.eq(addr_sh[24:]), load.eq(1)]
                    m.d.sync += [idx.eq(idx + 1), addr_sh.eq(addr_sh << 8)]
                    with m.If(idx == 3):
                        m.d.sync += idx.eq(0)
                        m.next = "HEADER"
            with m.State("HEADER"):
                m.d.comb += run.eq(1)
                with m.If(strobe):
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(rx_byte != expect[idx]):
                        m.d.sync += self.cs_n.eq(1)
                        m.next = "ERROR"
                    with m.Elif(idx == HEADER_BYTES - 1):
                        m.d.sync += [bidx.eq(0), count.eq(0)]
                        if self.n_words == 0:
                            m.d.sync += self.cs_n.eq(1)
                            m.next = "DONE"
                        else:
                            m.next = "WORDS"
            with m.State("WORDS"):
                m.d.comb += run.eq(1)
                with m.If(strobe):
                    m.d.sync += [word.eq(new_word), bidx.eq(bidx + 1)]
                    with m.If(bidx == nb - 1):
                        m.d.sync += [bidx.eq(0), count.eq(count + 1), self.wl_en.eq(1),
                                     self.wl_addr.eq(count), self.wl_data.eq(new_word[:self.word_bits])]
                        with m.If(count == self.n_words - 1):
                            m.d.sync += self.cs_n.eq(1)
                            m.next = "DONE"
            with m.State("DONE"):
                m.d.sync += self.done.eq(1)
            with m.State("ERROR"):
                m.d.sync += self.error.eq(1)
        return m
