/* Station protocol framing, device side: see sp_frame.h and PROTOCOL.md section 2. */
#include "sp_frame.h"

#include <string.h>

uint32_t sp_crc32c(const uint8_t *data, size_t len) {
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < len; i++) {
        crc ^= data[i];
        for (int bit = 0; bit < 8; bit++) {
            crc = (crc & 1u) ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
        }
    }
    return crc ^ 0xFFFFFFFFu;
}

size_t sp_cobs_encode(const uint8_t *in, size_t len, uint8_t *out) {
    size_t code_at = 0; /* where the current block's code byte goes */
    size_t o = 1;
    uint8_t code = 1;
    int ended_full = 0; /* the last block written was a full 0xFF block */
    for (size_t i = 0; i < len; i++) {
        ended_full = 0;
        if (in[i] == 0) {
            out[code_at] = code;
            code_at = o++;
            code = 1;
        } else {
            out[o++] = in[i];
            code++;
            if (code == 0xFF) { /* 254 data bytes: a full block, no implied zero */
                out[code_at] = code;
                code_at = o++;
                code = 1;
                ended_full = 1;
            }
        }
    }
    if (ended_full) {
        return o - 1; /* the data ended right after a full block: no final block */
    }
    out[code_at] = code;
    return o;
}

long sp_cobs_decode(const uint8_t *in, size_t len, uint8_t *out) {
    size_t i = 0;
    size_t o = 0;
    while (i < len) {
        uint8_t code = in[i];
        if (code == 0 || i + code > len) {
            return -1;
        }
        for (size_t k = i + 1; k < i + code; k++) {
            if (in[k] == 0) {
                return -1;
            }
            out[o++] = in[k];
        }
        i += code;
        if (code != 0xFF && i < len) {
            out[o++] = 0;
        }
    }
    return (long)o;
}

static void put_u16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)(v & 0xFFu);
    p[1] = (uint8_t)(v >> 8);
}

static void put_u32(uint8_t *p, uint32_t v) {
    for (int k = 0; k < 4; k++) {
        p[k] = (uint8_t)(v >> (8 * k));
    }
}

size_t sp_frame_build(uint8_t msg_type, uint8_t flags, uint16_t seq, const uint8_t *payload,
                      uint16_t payload_len, uint8_t *wire) {
    uint8_t raw[SP_MAX_RAW_FRAME];
    if (payload_len > SP_MAX_PAYLOAD) {
        return 0;
    }
    raw[0] = msg_type;
    raw[1] = flags;
    put_u16(&raw[2], seq);
    put_u16(&raw[4], payload_len);
    if (payload_len > 0) {
        memcpy(&raw[SP_HEADER_LEN], payload, payload_len);
    }
    size_t body = SP_HEADER_LEN + payload_len;
    put_u32(&raw[body], sp_crc32c(raw, body));
    wire[0] = 0;
    size_t n = sp_cobs_encode(raw, body + SP_CRC_LEN, &wire[1]);
    wire[1 + n] = 0;
    return n + 2;
}

void sp_receiver_init(sp_receiver *rx) {
    memset(rx, 0, sizeof *rx);
}

static sp_event drop(sp_drop_reason why, sp_drop_reason *reason) {
    *reason = why;
    return SP_GOT_DROP;
}

sp_event sp_receiver_push(sp_receiver *rx, uint8_t byte, sp_frame *frame, sp_drop_reason *reason) {
    if (byte != 0) {
        if (rx->discarding) {
            return SP_NOTHING;
        }
        if (rx->used == SP_MAX_ENCODED_FRAME) { /* no allocation ever depends on the data */
            rx->used = 0;
            rx->discarding = 1;
            return drop(SP_DROP_OVERSIZE, reason);
        }
        rx->encoded[rx->used++] = byte;
        return SP_NOTHING;
    }
    /* a delimiter: whatever came before it is one frame */
    size_t n = rx->used;
    rx->used = 0;
    if (rx->discarding) {
        rx->discarding = 0;
        return SP_NOTHING;
    }
    if (n == 0) {
        return SP_NOTHING; /* empty frame (two delimiters in a row) */
    }
    long size = sp_cobs_decode(rx->encoded, n, rx->raw);
    if (size < 0) {
        return drop(SP_DROP_COBS, reason);
    }
    if ((size_t)size < SP_HEADER_LEN + SP_CRC_LEN) {
        return drop(SP_DROP_SHORT, reason);
    }
    size_t body = (size_t)size - SP_CRC_LEN;
    const uint8_t *c = &rx->raw[body];
    uint32_t crc = (uint32_t)c[0] | ((uint32_t)c[1] << 8) | ((uint32_t)c[2] << 16) |
                   ((uint32_t)c[3] << 24);
    if (crc != sp_crc32c(rx->raw, body)) {
        return drop(SP_DROP_CRC, reason);
    }
    uint16_t payload_len = (uint16_t)(rx->raw[4] | (rx->raw[5] << 8));
    if (payload_len > SP_MAX_PAYLOAD) {
        return drop(SP_DROP_OVERSIZE, reason);
    }
    if (payload_len != body - SP_HEADER_LEN) {
        return drop(SP_DROP_LENGTH, reason);
    }
    frame->msg_type = rx->raw[0];
    frame->flags = rx->raw[1];
    frame->seq = (uint16_t)(rx->raw[2] | (rx->raw[3] << 8));
    frame->payload_len = payload_len;
    frame->payload = &rx->raw[SP_HEADER_LEN];
    return SP_GOT_FRAME;
}
