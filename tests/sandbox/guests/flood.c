/* Writes 1 GiB to stdout in 64 KiB chunks, ignoring write errors. */
#include <stdio.h>
#include <string.h>

static char buf[65536];

int main(void) {
    memset(buf, 'x', sizeof buf);
    for (int i = 0; i < 16384; i++) fwrite(buf, 1, sizeof buf, stdout);
    return 0;
}
