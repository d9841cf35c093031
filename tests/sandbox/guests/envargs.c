/* Reports argc, argv[0] and how many environment variables it sees. */
#include <stdio.h>
#include <stdlib.h>

extern char **environ;

int main(int argc, char **argv) {
    int envc = 0;
    for (char **e = environ; e && *e; e++) envc++;
    printf("{\"argc\":%d,\"argv0\":\"%s\",\"envc\":%d,\"home\":%s}",
           argc, argc > 0 ? argv[0] : "", envc, getenv("HOME") ? "true" : "false");
    return 0;
}
