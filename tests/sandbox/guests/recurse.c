/* Unbounded recursion with a stack frame the optimiser cannot remove. */
#include <stdio.h>

volatile int sink;

__attribute__((noinline)) int down(int n) {
    volatile char frame[256];
    frame[n & 255] = (char)n;
    int r = down(n + 1);
    frame[(n + 1) & 255] = (char)r;
    return frame[(n * 7) & 255] + r;
}

int main(void) { sink = down(0); printf("%d", sink); return 0; }
