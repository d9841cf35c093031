/* Uses the bastion host ABI. stdin "secret NAME" prints the secret (or -1);
   "http JSON" sends the request and prints the response JSON; "log TEXT" logs it. */
#include <stdio.h>
#include <string.h>

#define IMPORT(name) __attribute__((import_module("bastion"), import_name(name)))
IMPORT("http") int bastion_http(const char *req, int len);
IMPORT("take") int bastion_take(char *out, int cap);
IMPORT("secret") int bastion_secret(const char *name, int len, char *out, int cap);
IMPORT("log") void bastion_log(int level, const char *ptr, int len);

static char in[65536], out[1 << 20];

int main(void) {
    size_t n = fread(in, 1, sizeof in - 1, stdin);
    in[n] = 0;
    char *arg = strchr(in, ' ');
    if (!arg) return 2;
    *arg++ = 0;
    if (!strcmp(in, "secret")) {
        int k = bastion_secret(arg, (int)strlen(arg), out, 8);  /* small first */
        if (k > 8) k = bastion_secret(arg, (int)strlen(arg), out, sizeof out);
        if (k < 0) { printf("{\"secret\":null}"); return 0; }
        printf("{\"secret\":\"%.*s\"}", k, out);
        return 0;
    }
    if (!strcmp(in, "http")) {
        int k = bastion_http(arg, (int)strlen(arg));
        if (k < 0) return 5;
        int got = bastion_take(out, 4);              /* too small: stays pending */
        if (got != k) return 6;
        got = bastion_take(out, sizeof out);
        if (got != k) return 7;
        if (bastion_take(out, sizeof out) != -1) return 8;
        fwrite(out, 1, (size_t)k, stdout);
        return 0;
    }
    if (!strcmp(in, "log")) {
        bastion_log(1, arg, (int)strlen(arg));
        printf("{\"logged\":true}");
        return 0;
    }
    return 2;
}
