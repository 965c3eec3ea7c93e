; vector_add.s -- c = a + b over 16 int32 elements, on one core.
;
; The core on tile (0,0) adds the 16-word vectors a and b element by element (mod 2^32) with a
; single vector instruction, then halts. The result lands in that core's SRAM at data `c`:
; words 32..47 (a is at 0..15, b at 16..31, in the order they are declared below).
; Expected: c = 700, 694, 676, 646, 604, 550, 484, 406, 316, 214, 100, -26, -164, -314,
; -476, -650. Every other tile of the mesh runs no program and only halts.
;
; Assemble:  python -m mesh.asm programs/asm/vector_add.s   (prints a listing)

.equ N 16                       ; elements per vector

.core main (0,0)                ; the core program "main", placed on tile (0,0)

.data a  -300, -293, -272, -237, -188, -125,  -48,    43
.word     148,  267,  400,  547,  708,  883, 1072,  1275
.data b  1000,  987,  948,  883,  792,  675,  532,   363
.word     168,  -53, -300, -573, -872, -1197, -1548, -1925
.zero c  N                      ; the result: N words, zero until the run writes them

        mem_vector d0, a, N     ; d0 = a[0..15]: dmem, dlen, dstride (stride 1)
        mem_vector d1, b, N     ; d1 = b[0..15]
        mem_vector d2, c, N     ; d2 = c[0..15], the destination
        vadd d2, d0, d1         ; c[i] = a[i] + b[i], one element per cycle (N + 2 cycles)
        halt
