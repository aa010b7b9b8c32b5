/* waio_status_is_retriable against the host's shared table (wit/retriable-statuses.txt, path in
 * argv[1]): every status from 100 to 699. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "waio.h"

static int listed(const char *table_path, unsigned status) {
    FILE *f = fopen(table_path, "r");
    if (!f) {
        perror(table_path);
        exit(2);
    }
    char line[128];
    int found = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned low = 0, high = 0;
        if (line[0] == '#' || line[0] == '\n') continue;
        int n = sscanf(line, "%u-%u", &low, &high);
        if (n == 1) high = low;
        if (n >= 1 && status >= low && status <= high) found = 1;
    }
    fclose(f);
    return found;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: status_test TABLE\n");
        return 2;
    }
    int failures = 0;
    for (unsigned status = 100; status < 700; status++) {
        int want = listed(argv[1], status);
        int got = waio_status_is_retriable((uint16_t)status) ? 1 : 0;
        if (want != got) {
            fprintf(stderr, "status %u: SDK says %d, table says %d\n", status, got, want);
            failures++;
        }
    }
    if (failures) return 1;
    printf("status_test: ok\n");
    return 0;
}
