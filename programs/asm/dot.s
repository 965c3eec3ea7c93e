; dot.s -- the int8 dot product of two 64-element vectors, on one core.
;
; x and y hold 64 signed 8-bit values each, packed 4 per 32-bit word (16 words each; lane k of
; a word is bits [8k+7:8k], so 0xfbd6b18c holds -116, -79, -42, -5 from lane 0 up).
; The core on tile (0,0) computes sum(x[i] * y[i] for i < 64) with one vdot4.sum (four
; multiply-accumulates per word, reduced into r1), stores it, and halts.
; The result lands in that core's SRAM at data `result`: word 32 (x is at 0..15, y at
; 16..31). Expected: -1850 (0xfffff8c6).
;
; x[i] = (37 i + 11) mod 255 - 127,  y[i] = (91 i + 5) mod 201 - 100,  i = 0..63
;
; Assemble:  python -m mesh.asm programs/asm/dot.s   (prints a listing)

.equ WORDS 16                   ; 64 int8 values = 16 packed words

.core main (0,0)

.data x  0xfbd6b18c, 0x906a4520, 0x24ffdab5, 0xb9946e49
.word    0x4d2803de, 0xe2bd9872, 0x76512c07, 0x0be6c19c
.word    0xa07a5530, 0x340feac5, 0xc9a47e59, 0x5d3813ee
.word    0xf2cda883, 0x87613c17, 0x1bf6d1ac, 0xb08b6540
.data y  0xe957fca1, 0xc331d644, 0x9d0bb01e, 0x40e553f8
.word    0x1abf2dd2, 0xf46207ac, 0xce3ce14f, 0xa816bb29
.word    0x4bf05e03, 0x25ca38dd, 0xffa412b7, 0xd947ec5a
.word    0xb321c634, 0x56fba00e, 0x30d543e8, 0x0aaf1dc2
.zero result 1

        mem_vector d0, x, WORDS         ; d0 = x, 16 packed words
        mem_vector d1, y, WORDS         ; d1 = y
        vdot4.sum r1, d0, d1            ; r1 = sum over words of dot4(x[w], y[w])
        st r1, result(r0)               ; sram[result] = r1
        halt
