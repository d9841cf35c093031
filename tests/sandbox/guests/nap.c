/* Sleeps 20 ms (a short, legitimate sleep), then prints {"slept":true}. */
#include <stdio.h>
#include <time.h>

int main(void) {
    struct timespec ts = {0, 20 * 1000 * 1000};
    if (nanosleep(&ts, NULL) != 0) return 1;
    printf("{\"slept\":true}");
    return 0;
}
