/* Opens /data/f.txt until the OS refuses, then fails (exit 1) without closing anything. */
#include <stdio.h>

int main(void) {
    int opened = 0;
    for (;;) {
        FILE *f = fopen("/data/f.txt", "r");
        if (f == NULL) {
            fprintf(stderr, "fopen failed after %d files\n", opened);
            return 1;
        }
        opened++;
    }
}
