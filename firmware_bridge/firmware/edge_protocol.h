/* edge-runtime wire protocol v1 (see firmware_bridge/protocol.py for the layout).
 * Plain C99, no allocation: builds for AVR/RP2040 firmware and for the host tests. */
#ifndef EDGE_PROTOCOL_H
#define EDGE_PROTOCOL_H

#include <stddef.h>
#include <stdint.h>

#define EDGE_PROTOCOL_VERSION 1
#define EDGE_MAX_BODY 64
#define EDGE_MAX_FRAME (2 + 2 * (7 + EDGE_MAX_BODY))

enum edge_type { EDGE_TRIGGER = 1, EDGE_VERDICT = 2, EDGE_HEARTBEAT = 3, EDGE_ERROR = 4 };
enum edge_verdict { EDGE_PASS = 0, EDGE_REJECT = 1 };
#define EDGE_FLAG_FAILSAFE 0x01
#define EDGE_FLAG_ERROR 0x02

typedef struct {
    uint8_t type;
    uint16_t seq;
    uint8_t len;
    uint8_t body[EDGE_MAX_BODY];
} edge_message;

/* Incremental frame reader: feed one byte at a time. */
typedef struct {
    uint8_t buf[EDGE_MAX_FRAME];
    size_t len;
    uint8_t discarding;
    uint16_t corrupt;
} edge_reader;

uint16_t edge_crc16(const uint8_t *data, size_t len);
size_t edge_cobs_encode(const uint8_t *in, size_t len, uint8_t *out);
/* Returns the decoded length, or (size_t)-1 on malformed input. */
size_t edge_cobs_decode(const uint8_t *in, size_t len, uint8_t *out);
/* Encodes msg into out (delimiter included); returns bytes written (<= EDGE_MAX_FRAME). */
size_t edge_encode(const edge_message *msg, uint8_t *out);
/* Decodes one frame (no delimiter). Returns 0 on success, -1 on any error. */
int edge_decode(const uint8_t *frame, size_t len, edge_message *msg);
void edge_reader_init(edge_reader *reader);
/* Returns 1 when a whole valid message is in *msg, else 0. */
int edge_reader_feed(edge_reader *reader, uint8_t byte, edge_message *msg);

#endif
