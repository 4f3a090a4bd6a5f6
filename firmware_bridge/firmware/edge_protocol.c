/* edge-runtime wire protocol v1: COBS framing, CRC-16/CCITT-FALSE. */
#include "edge_protocol.h"

uint16_t edge_crc16(const uint8_t *data, size_t len) {
    uint16_t crc = 0xFFFF;
    for (size_t i = 0; i < len; i++) {
        crc ^= (uint16_t)data[i] << 8;
        for (uint8_t bit = 0; bit < 8; bit++) {
            crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
        }
    }
    return crc;
}

size_t edge_cobs_encode(const uint8_t *in, size_t len, uint8_t *out) {
    size_t code_index = 0, write = 1;
    uint8_t code = 1;
    for (size_t i = 0; i < len; i++) {
        if (in[i] == 0) {
            out[code_index] = code;
            code_index = write++;
            code = 1;
            continue;
        }
        out[write++] = in[i];
        if (++code == 0xFF) {
            out[code_index] = code;
            code_index = write++;
            code = 1;
        }
    }
    out[code_index] = code;
    return write;
}

size_t edge_cobs_decode(const uint8_t *in, size_t len, uint8_t *out) {
    size_t read = 0, write = 0;
    while (read < len) {
        uint8_t code = in[read];
        if (code == 0 || read + code > len) {
            return (size_t)-1;
        }
        read++;
        for (uint8_t i = 1; i < code; i++) {
            if (in[read] == 0) {
                return (size_t)-1;
            }
            out[write++] = in[read++];
        }
        if (code < 0xFF && read < len) {
            out[write++] = 0;
        }
    }
    return write;
}

size_t edge_encode(const edge_message *msg, uint8_t *out) {
    uint8_t payload[5 + EDGE_MAX_BODY + 2];
    uint8_t len = msg->len > EDGE_MAX_BODY ? EDGE_MAX_BODY : msg->len;
    payload[0] = EDGE_PROTOCOL_VERSION;
    payload[1] = msg->type;
    payload[2] = (uint8_t)(msg->seq & 0xFF);
    payload[3] = (uint8_t)(msg->seq >> 8);
    payload[4] = len;
    for (uint8_t i = 0; i < len; i++) {
        payload[5 + i] = msg->body[i];
    }
    uint16_t crc = edge_crc16(payload, 5u + len);
    payload[5 + len] = (uint8_t)(crc & 0xFF);
    payload[6 + len] = (uint8_t)(crc >> 8);
    size_t n = edge_cobs_encode(payload, 7u + len, out);
    out[n++] = 0;
    return n;
}

int edge_decode(const uint8_t *frame, size_t len, edge_message *msg) {
    uint8_t payload[EDGE_MAX_FRAME];
    if (len > EDGE_MAX_FRAME) {
        return -1;
    }
    size_t n = edge_cobs_decode(frame, len, payload);
    if (n == (size_t)-1 || n < 7 || payload[0] != EDGE_PROTOCOL_VERSION) {
        return -1;
    }
    uint8_t body_len = payload[4];
    if (body_len > EDGE_MAX_BODY || n != 7u + body_len) {
        return -1;
    }
    uint16_t crc = (uint16_t)(payload[5 + body_len] | (payload[6 + body_len] << 8));
    if (crc != edge_crc16(payload, 5u + body_len)) {
        return -1;
    }
    msg->type = payload[1];
    msg->seq = (uint16_t)(payload[2] | (payload[3] << 8));
    msg->len = body_len;
    for (uint8_t i = 0; i < body_len; i++) {
        msg->body[i] = payload[5 + i];
    }
    return 0;
}

void edge_reader_init(edge_reader *reader) {
    reader->len = 0;
    reader->discarding = 0;
    reader->corrupt = 0;
}

int edge_reader_feed(edge_reader *reader, uint8_t byte, edge_message *msg) {
    if (byte != 0) {
        if (reader->discarding) {
            return 0;
        }
        if (reader->len >= EDGE_MAX_FRAME) {
            reader->discarding = 1;
            reader->len = 0;
            return 0;
        }
        reader->buf[reader->len++] = byte;
        return 0;
    }
    reader->discarding = 0;
    if (reader->len == 0) {
        return 0;
    }
    int ok = edge_decode(reader->buf, reader->len, msg) == 0;
    if (!ok) {
        reader->corrupt++;
    }
    reader->len = 0;
    return ok;
}
