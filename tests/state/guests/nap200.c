/* Sleeps 200 ms, then echoes its JSON input: a call that holds its concurrency slot a while. */
#include <stdio.h>
#include <time.h>

int main(void) {
    char buf[4096];
    size_t n;
    struct timespec ts = {0, 200 * 1000 * 1000};
    if (nanosleep(&ts, NULL) != 0) return 1;
    while ((n = fread(buf, 1, sizeof buf, stdin)) > 0) {
        if (fwrite(buf, 1, n, stdout) != n) return 1;
    }
    return ferror(stdin) ? 1 : 0;
}
