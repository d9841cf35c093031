/* CPU-bound work: stdin holds N; prints {"x":...} after N million iterations. */
#include <stdio.h>
#include <stdlib.h>

int main(void) {
    char buf[64];
    size_t n = fread(buf, 1, sizeof buf - 1, stdin);
    buf[n] = 0;
    long iters = atol(buf) * 1000000L;
    unsigned long x = 1;
    for (long i = 0; i < iters; i++) x = x * 6364136223846793005UL + 1442695040888963407UL;
    printf("{\"x\":%lu}", x % 1000);
    return 0;
}
