/* Allocates and touches 1 MiB blocks until malloc fails, then aborts. */
#include <stdlib.h>
#include <string.h>

char *volatile keep[1 << 16];

int main(void) {
    for (int i = 0;; i++) {
        char *p = malloc(1 << 20);
        if (!p) abort();
        memset(p, i, 1 << 20);
        keep[i & 0xFFFF] = p;
    }
}
