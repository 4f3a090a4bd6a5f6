/* Host test driver for edge_protocol.c: reads commands on stdin, one per line.
 *   E <type> <seq> <bodyhex>  -> prints the encoded frame as hex
 *   S <hex>                   -> feeds bytes through edge_reader, prints each message
 *                                as "M <type> <seq> <bodyhex>", then "C <corrupt count>"
 *   R <hex>                   -> prints "K <crc16 hex>"
 */
#include <stdio.h>
#include <string.h>

#include "edge_protocol.h"

static size_t unhex(const char *hex, uint8_t *out) {
    size_t n = 0;
    unsigned value;
    while (hex[0] && hex[1] && sscanf(hex, "%2x", &value) == 1) {
        out[n++] = (uint8_t)value;
        hex += 2;
    }
    return n;
}

static void puthex(const uint8_t *data, size_t len) {
    for (size_t i = 0; i < len; i++) {
        printf("%02x", data[i]);
    }
    if (len == 0) {
        printf("-");
    }
}

int main(void) {
    static char line[65536];
    static uint8_t bytes[32768];
    while (fgets(line, sizeof line, stdin)) {
        char cmd = line[0];
        if (cmd == 'E') {
            unsigned type, seq;
            char body[256] = "";
            if (sscanf(line + 1, "%u %u %255s", &type, &seq, body) < 2) {
                continue;
            }
            edge_message msg = {.type = (uint8_t)type, .seq = (uint16_t)seq};
            msg.len = (uint8_t)(body[0] == '-' ? 0 : unhex(body, msg.body));
            uint8_t frame[EDGE_MAX_FRAME];
            puthex(frame, edge_encode(&msg, frame));
            printf("\n");
        } else if (cmd == 'S' || cmd == 'R') {
            char *hex = line + 2;
            hex[strcspn(hex, "\r\n")] = 0;
            size_t n = unhex(hex, bytes);
            if (cmd == 'R') {
                printf("K %04x\n", edge_crc16(bytes, n));
                continue;
            }
            edge_reader reader;
            edge_message msg;
            edge_reader_init(&reader);
            for (size_t i = 0; i < n; i++) {
                if (edge_reader_feed(&reader, bytes[i], &msg)) {
                    printf("M %u %u ", msg.type, msg.seq);
                    puthex(msg.body, msg.len);
                    printf("\n");
                }
            }
            printf("C %u\n", reader.corrupt);
        }
        fflush(stdout);
    }
    return 0;
}
