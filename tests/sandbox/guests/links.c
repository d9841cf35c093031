/* Link probe: tries to leave links in the writable mount /w (a symlink climbing out, an
   absolute one, one inside, a hard link) and prints {"name": errno-or-0, ...}. */
#include <errno.h>
#include <stdio.h>
#include <unistd.h>

static int try_symlink(const char *target, const char *path) {
    return symlink(target, path) == 0 ? 0 : errno;
}

int main(void) {
    FILE *f = fopen("/w/file.txt", "w");
    if (!f) return 3;
    fputs("mine", f);
    fclose(f);
    int up = try_symlink("../../../../../../etc/passwd", "/w/up");
    int abs = try_symlink("/etc/passwd", "/w/abs");
    int inside = try_symlink("file.txt", "/w/inside");
    int hard = link("/w/file.txt", "/w/hard") == 0 ? 0 : errno;
    printf("{\"up\":%d,\"abs\":%d,\"inside\":%d,\"hard\":%d,\"eperm\":%d}", up, abs, inside, hard,
           EPERM);
    return 0;
}
