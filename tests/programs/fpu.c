/* fpu.c - FPU/SIMD register state across sleeps.
 *
 * usage: fpu [STEPS=30] [SLEEP_MS=60]
 *
 * Each step loads distinctive values into the x87 stack, the vector
 * registers (zmm0-31 and k0-7 when the CPU has AVX-512F, else ymm0-15 with
 * AVX, else xmm0-15), eight general-purpose registers, and sets MXCSR and
 * the x87 control word to non-default rounding modes.  Then, in the same
 * asm statement so the compiler can't spill anything, it sleeps with a raw
 * nanosleep syscall, stores every register back and restores the default
 * modes.  The stored values must equal the loaded ones.  The first line
 * says which register set the CPU offers, so stdout is deterministic on
 * one machine.
 */
#include <stddef.h>

#include "testutil.h"

struct block {
    unsigned char zin[32][64];  /* 0 */
    unsigned char zout[32][64]; /* 2048 */
    uint64_t gin[8];            /* 4096: rbx r8 r9 r10 r12 r13 r14 r15 */
    uint64_t gout[8];           /* 4160 */
    unsigned char xin[4][16];   /* 4224: 80-bit x87 values */
    unsigned char xout[4][16];  /* 4288 */
    uint16_t kin[8];            /* 4352 */
    uint16_t kout[8];           /* 4368 */
    uint32_t mxcsr_set;         /* 4384 */
    uint32_t mxcsr_out;         /* 4388 */
    uint32_t mxcsr_orig;        /* 4392 */
    uint16_t fcw_set;           /* 4396 */
    uint16_t fcw_out;           /* 4398 */
    uint16_t fcw_orig;          /* 4400 */
    uint16_t pad[3];
    int64_t req[2];             /* 4408: struct timespec */
    int64_t ret;                /* 4424 */
} __attribute__((aligned(64)));

_Static_assert(offsetof(struct block, zout) == 2048, "layout");
_Static_assert(offsetof(struct block, gin) == 4096, "layout");
_Static_assert(offsetof(struct block, gout) == 4160, "layout");
_Static_assert(offsetof(struct block, xin) == 4224, "layout");
_Static_assert(offsetof(struct block, xout) == 4288, "layout");
_Static_assert(offsetof(struct block, kin) == 4352, "layout");
_Static_assert(offsetof(struct block, kout) == 4368, "layout");
_Static_assert(offsetof(struct block, mxcsr_set) == 4384, "layout");
_Static_assert(offsetof(struct block, mxcsr_out) == 4388, "layout");
_Static_assert(offsetof(struct block, mxcsr_orig) == 4392, "layout");
_Static_assert(offsetof(struct block, fcw_set) == 4396, "layout");
_Static_assert(offsetof(struct block, fcw_out) == 4398, "layout");
_Static_assert(offsetof(struct block, fcw_orig) == 4400, "layout");
_Static_assert(offsetof(struct block, req) == 4408, "layout");
_Static_assert(offsetof(struct block, ret) == 4424, "layout");

#define S(x) #x
#define STR(x) S(x)

/* Mode setup, x87 loads, GPR loads ... syscall ... the mirror image. */
#define PROLOGUE                                                                             \
    "fnstcw 4400(%%rdx)\n\t"                                                                 \
    "stmxcsr 4392(%%rdx)\n\t"                                                                \
    "fldcw 4396(%%rdx)\n\t"                                                                  \
    "ldmxcsr 4384(%%rdx)\n\t"                                                                \
    "fldt 4224(%%rdx)\n\t"                                                                   \
    "fldt 4240(%%rdx)\n\t"                                                                   \
    "fldt 4256(%%rdx)\n\t"                                                                   \
    "fldt 4272(%%rdx)\n\t"                                                                   \
    "mov 4096(%%rdx), %%rbx\n\t"                                                             \
    "mov 4104(%%rdx), %%r8\n\t"                                                              \
    "mov 4112(%%rdx), %%r9\n\t"                                                              \
    "mov 4120(%%rdx), %%r10\n\t"                                                             \
    "mov 4128(%%rdx), %%r12\n\t"                                                             \
    "mov 4136(%%rdx), %%r13\n\t"                                                             \
    "mov 4144(%%rdx), %%r14\n\t"                                                             \
    "mov 4152(%%rdx), %%r15\n\t"

#define SLEEP                                                                                \
    "mov $35, %%eax\n\t"                                                                     \
    "lea 4408(%%rdx), %%rdi\n\t"                                                             \
    "xor %%esi, %%esi\n\t"                                                                   \
    "syscall\n\t"                                                                            \
    "mov %%rax, 4424(%%rdx)\n\t"

#define EPILOGUE                                                                             \
    "mov %%rbx, 4160(%%rdx)\n\t"                                                             \
    "mov %%r8, 4168(%%rdx)\n\t"                                                              \
    "mov %%r9, 4176(%%rdx)\n\t"                                                              \
    "mov %%r10, 4184(%%rdx)\n\t"                                                             \
    "mov %%r12, 4192(%%rdx)\n\t"                                                             \
    "mov %%r13, 4200(%%rdx)\n\t"                                                             \
    "mov %%r14, 4208(%%rdx)\n\t"                                                             \
    "mov %%r15, 4216(%%rdx)\n\t"                                                             \
    "fstpt 4336(%%rdx)\n\t"                                                                  \
    "fstpt 4320(%%rdx)\n\t"                                                                  \
    "fstpt 4304(%%rdx)\n\t"                                                                  \
    "fstpt 4288(%%rdx)\n\t"                                                                  \
    "fnstcw 4398(%%rdx)\n\t"                                                                 \
    "stmxcsr 4388(%%rdx)\n\t"                                                                \
    "fldcw 4400(%%rdx)\n\t"                                                                  \
    "ldmxcsr 4392(%%rdx)\n\t"

#define GPR_CLOBBERS "rax", "rbx", "rcx", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", \
    "r13", "r14", "r15", "memory", "cc"
#define X87_CLOBBERS "st", "st(1)", "st(2)", "st(3)", "st(4)", "st(5)", "st(6)", "st(7)"
#define XMM_CLOBBERS "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", \
    "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15"

#define LD512(n) "vmovdqu64 " STR(n) "*64(%%rdx), %%zmm" STR(n) "\n\t"
#define ST512(n) "vmovdqu64 %%zmm" STR(n) ", 2048+" STR(n) "*64(%%rdx)\n\t"
#define LDK(n) "kmovw 4352+" STR(n) "*2(%%rdx), %%k" STR(n) "\n\t"
#define STK(n) "kmovw %%k" STR(n) ", 4368+" STR(n) "*2(%%rdx)\n\t"
#define LD256(n) "vmovdqu " STR(n) "*64(%%rdx), %%ymm" STR(n) "\n\t"
#define ST256(n) "vmovdqu %%ymm" STR(n) ", 2048+" STR(n) "*64(%%rdx)\n\t"
#define LD128(n) "movdqu " STR(n) "*64(%%rdx), %%xmm" STR(n) "\n\t"
#define ST128(n) "movdqu %%xmm" STR(n) ", 2048+" STR(n) "*64(%%rdx)\n\t"

#define X8(M, a) M(a##0) M(a##1) M(a##2) M(a##3) M(a##4) M(a##5) M(a##6) M(a##7)
#define ALL16(M) M(0) M(1) M(2) M(3) M(4) M(5) M(6) M(7) M(8) M(9) M(10) M(11) M(12) M(13) \
    M(14) M(15)
#define UPPER16(M) M(16) M(17) M(18) M(19) M(20) M(21) M(22) M(23) M(24) M(25) M(26) M(27) \
    M(28) M(29) M(30) M(31)
#define K8(M) M(0) M(1) M(2) M(3) M(4) M(5) M(6) M(7)

__attribute__((target("avx512f"), noinline)) static void sleep_avx512(struct block *b)
{
    __asm__ volatile(PROLOGUE ALL16(LD512) UPPER16(LD512) K8(LDK) SLEEP K8(STK) ALL16(ST512)
                         UPPER16(ST512) EPILOGUE "vzeroupper\n\t"
                     :
                     : "d"(b)
                     : GPR_CLOBBERS, X87_CLOBBERS, XMM_CLOBBERS, "xmm16", "xmm17", "xmm18",
                       "xmm19", "xmm20", "xmm21", "xmm22", "xmm23", "xmm24", "xmm25", "xmm26",
                       "xmm27", "xmm28", "xmm29", "xmm30", "xmm31", "k0", "k1", "k2", "k3",
                       "k4", "k5", "k6", "k7");
}

__attribute__((target("avx"), noinline)) static void sleep_avx(struct block *b)
{
    __asm__ volatile(PROLOGUE ALL16(LD256) SLEEP ALL16(ST256) EPILOGUE "vzeroupper\n\t"
                     :
                     : "d"(b)
                     : GPR_CLOBBERS, X87_CLOBBERS, XMM_CLOBBERS);
}

__attribute__((noinline)) static void sleep_sse(struct block *b)
{
    __asm__ volatile(PROLOGUE ALL16(LD128) SLEEP ALL16(ST128) EPILOGUE
                     :
                     : "d"(b)
                     : GPR_CLOBBERS, X87_CLOBBERS, XMM_CLOBBERS);
}

int main(int argc, char **argv)
{
    long steps = arg_long(argc, argv, 1, 30);
    long ms = arg_long(argc, argv, 2, 60);
    static const uint32_t mxcsr_modes[] = { 0x7f80, 0x3f80 | 0x8000, 0x5f80 | 0x0040, 0xff80 };
    static const uint16_t fcw_modes[] = { 0x0f7f, 0x077f, 0x0b7f, 0x027f };
    static struct block b;
    __builtin_cpu_init();
    int avx512 = __builtin_cpu_supports("avx512f");
    int avx = __builtin_cpu_supports("avx");
    int nvec = avx512 ? 32 : 16, width = avx512 ? 64 : avx ? 32 : 16;
    uint64_t acc = 0xf9;

    out("avx512 %s avx %s\n", avx512 ? "yes" : "no", avx ? "yes" : "no");
    for (long s = 0; s < steps; s++) {
        uint64_t h = mix64(0xf00d, (uint64_t)s);
        memset(&b, 0, sizeof b);
        for (int r = 0; r < 32; r++)
            for (int i = 0; i < 64; i += 8) {
                h = mix64(h, (uint64_t)(r * 64 + i));
                memcpy(&b.zin[r][i], &h, 8);
            }
        for (int r = 0; r < 8; r++) {
            b.gin[r] = h = mix64(h, (uint64_t)r);
            b.kin[r] = (uint16_t)mix64(h, 77);
        }
        for (int r = 0; r < 4; r++) {
            long double v = (long double)(s + 1) * 3.14159265358979323846264L / (long double)(r + 7);
            memcpy(b.xin[r], &v, 10);
        }
        b.mxcsr_set = mxcsr_modes[s % 4];
        b.fcw_set = fcw_modes[s % 4];
        b.req[0] = ms / 1000;
        b.req[1] = (ms % 1000) * 1000000L;

        if (avx512)
            sleep_avx512(&b);
        else if (avx)
            sleep_avx(&b);
        else
            sleep_sse(&b);

        if (b.ret != 0 && b.ret != -EINTR)
            corrupt("step %ld: nanosleep returned %lld", s, (long long)b.ret);
        for (int r = 0; r < nvec; r++)
            if (memcmp(b.zin[r], b.zout[r], (size_t)width) != 0)
                corrupt("step %ld: vector register %d changed across the sleep", s, r);
        for (int r = 0; r < 8; r++)
            if (b.gin[r] != b.gout[r])
                corrupt("step %ld: general register #%d changed: %#llx != %#llx", s, r,
                        (unsigned long long)b.gout[r], (unsigned long long)b.gin[r]);
        if (avx512)
            for (int r = 0; r < 8; r++)
                if (b.kin[r] != b.kout[r])
                    corrupt("step %ld: k%d changed: %#x != %#x", s, r, b.kout[r], b.kin[r]);
        for (int r = 0; r < 4; r++)
            if (memcmp(b.xin[r], b.xout[r], 10) != 0)
                corrupt("step %ld: x87 value %d changed", s, r);
        if (b.mxcsr_out != b.mxcsr_set)
            corrupt("step %ld: MXCSR %#x, expected %#x", s, b.mxcsr_out, b.mxcsr_set);
        if (b.fcw_out != b.fcw_set)
            corrupt("step %ld: x87 control word %#x, expected %#x", s, b.fcw_out, b.fcw_set);

        for (int r = 0; r < nvec; r++)
            acc = mix_bytes(acc, b.zout[r], (size_t)width);
        acc = mix_bytes(acc, b.gout, sizeof b.gout);
        for (int r = 0; r < 4; r++)
            acc = mix_bytes(acc, b.xout[r], 10);
        if (avx512)
            acc = mix_bytes(acc, b.kout, sizeof b.kout);
        acc = mix64(acc, ((uint64_t)b.mxcsr_out << 16) | b.fcw_out);
        out("step %ld ok acc 0x%016llx\n", s, (unsigned long long)acc);
    }
    out("done steps %ld digest 0x%016llx\n", steps, (unsigned long long)acc);
    return 0;
}
