/* Sleeps 10 s inside a WASI host call (poll_oneoff), then prints {}. */
#include <stdio.h>
#include <unistd.h>

int main(void) {
    sleep(10);
    printf("{}");
    return 0;
}
