/*
 * A line-oriented harness around sp_frame.c for tests/protocol/test_c_reference.py.
 * Each command line gets its answer lines, then "END":
 *   C <hex>                    -> the CRC-32C, 8 hex digits
 *   B <hex>                    -> COBS encoding (hex)
 *   U <hex>                    -> COBS decoding (hex), or ERR
 *   E <type> <seq> <flags> <payload hex, or ->   -> the wire frame (hex)
 *   D <wire hex>               -> for each event: FRAME <type> <seq> <flags> <payload hex, or ->
 *                                 or DROP <reason>
 */
#include "sp_frame.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LINE (1 << 18)

static size_t unhex(const char *s, uint8_t *out) {
    size_t n = 0;
    if (strcmp(s, "-") == 0) {
        return 0;
    }
    while (s[0] && s[1]) {
        unsigned v;
        if (sscanf(s, "%2x", &v) != 1) {
            break;
        }
        out[n++] = (uint8_t)v;
        s += 2;
    }
    return n;
}

static void put_hex(const uint8_t *p, size_t n) {
    if (n == 0) {
        fputs("-", stdout);
    }
    for (size_t i = 0; i < n; i++) {
        printf("%02x", p[i]);
    }
}

static const char *reason_name(sp_drop_reason r) {
    switch (r) {
    case SP_DROP_OVERSIZE: return "oversize";
    case SP_DROP_COBS: return "cobs";
    case SP_DROP_SHORT: return "short";
    case SP_DROP_CRC: return "crc";
    case SP_DROP_LENGTH: return "length";
    }
    return "?";
}

int main(void) {
    static char line[MAX_LINE];
    static uint8_t in[MAX_LINE], out[2 * MAX_LINE];
    static sp_receiver rx;
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\r\n")] = 0;
        char cmd = line[0];
        const char *arg = line[1] ? line + 2 : "";
        if (cmd == 'C') {
            size_t n = unhex(arg, in);
            printf("%08x\n", (unsigned)sp_crc32c(in, n));
        } else if (cmd == 'B') {
            size_t n = unhex(arg, in);
            put_hex(out, sp_cobs_encode(in, n, out));
            putchar('\n');
        } else if (cmd == 'U') {
            size_t n = unhex(arg, in);
            long m = sp_cobs_decode(in, n, out);
            if (m < 0) {
                puts("ERR");
            } else {
                put_hex(out, (size_t)m);
                putchar('\n');
            }
        } else if (cmd == 'E') {
            unsigned type, seq, flags;
            int used = 0;
            if (sscanf(arg, "%u %u %u %n", &type, &seq, &flags, &used) != 3 || used == 0) {
                puts("ERR");
            } else {
                size_t n = unhex(arg + used, in);
                size_t w = sp_frame_build((uint8_t)type, (uint8_t)flags, (uint16_t)seq, in,
                                          (uint16_t)n, out);
                put_hex(out, w);
                putchar('\n');
            }
        } else if (cmd == 'D') {
            size_t n = unhex(arg, in);
            sp_receiver_init(&rx);
            for (size_t i = 0; i < n; i++) {
                sp_frame f;
                sp_drop_reason why;
                sp_event ev = sp_receiver_push(&rx, in[i], &f, &why);
                if (ev == SP_GOT_FRAME) {
                    printf("FRAME %u %u %u ", f.msg_type, f.seq, f.flags);
                    put_hex(f.payload, f.payload_len);
                    putchar('\n');
                } else if (ev == SP_GOT_DROP) {
                    printf("DROP %s\n", reason_name(why));
                }
            }
        } else if (cmd) {
            puts("ERR");
        }
        puts("END");
        fflush(stdout);
    }
    return 0;
}
