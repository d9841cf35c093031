/* Filesystem probe: stdin "r PATH" reads PATH, "w PATH" writes "written" to PATH.
   Prints {"ok":true,"data":"..."} or {"ok":false,"errno":N}. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

static int fail(void) { printf("{\"ok\":false,\"errno\":%d}", errno); return 0; }

int main(void) {
    char cmd[4096];
    size_t n = fread(cmd, 1, sizeof cmd - 1, stdin);
    cmd[n] = 0;
    if (n < 3) return 3;
    const char *path = cmd + 2;
    if (cmd[0] == 'r') {
        FILE *f = fopen(path, "r");
        if (!f) return fail();
        char buf[256];
        size_t k = fread(buf, 1, sizeof buf - 1, f);
        buf[k] = 0;
        for (size_t i = 0; i < k; i++) if (buf[i] == '"' || buf[i] == '\\' || buf[i] < 32) buf[i] = '_';
        fclose(f);
        printf("{\"ok\":true,\"data\":\"%s\"}", buf);
        return 0;
    }
    if (cmd[0] == 'w') {
        FILE *f = fopen(path, "w");
        if (!f) return fail();
        if (fputs("written", f) < 0 || fclose(f) != 0) return fail();
        printf("{\"ok\":true}");
        return 0;
    }
    return 4;
}
