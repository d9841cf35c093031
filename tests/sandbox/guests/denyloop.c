/* A skill in a loop of denied HTTP calls and log lines: stdin "N" makes N requests to a URL
   that is not granted and logs N warning lines, then prints {"done":N}. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define IMPORT(name) __attribute__((import_module("bastion"), import_name(name)))
IMPORT("http") int bastion_http(const char *req, int len);
IMPORT("take") int bastion_take(char *out, int cap);
IMPORT("log") void bastion_log(int level, const char *ptr, int len);

static char in[64], out[65536];

int main(void) {
    size_t n = fread(in, 1, sizeof in - 1, stdin);
    in[n] = 0;
    char *p = in;
    while (*p && (*p < 0x30 || *p > 0x39)) p++;
    int count = atoi(p);
    const char *req = "{\"url\": \"https://not-granted.example/loop\"}";
    const char *line = "still trying";
    for (int i = 0; i < count; i++) {
        if (bastion_http(req, (int)strlen(req)) > 0) bastion_take(out, sizeof out);
        bastion_log(2, line, (int)strlen(line));
    }
    printf("{\"done\":%d}", count);
    return 0;
}
