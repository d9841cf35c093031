/* Writes a message to stderr and exits with status 3. */
#include <stdio.h>

int main(void) {
    fprintf(stderr, "\x1b[31mbad input: missing field 'city'\x1b[0m\n");
    return 3;
}
