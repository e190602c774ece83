/*
 * Station protocol framing, device side, in plain C99 (PROTOCOL.md section 2).
 *
 * A reference for firmware engineers, written from the spec alone and checked against
 * vectors/frames.json and the Python implementation by tests/protocol/test_c_reference.py.
 * No heap, no libc beyond memcpy/memset, one static receiver per UART: it ports to a
 * Cortex-M as it is. Message payloads (TLV, section 3) are left to the application.
 */
#ifndef SP_FRAME_H
#define SP_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define SP_MAX_PAYLOAD 1024u
#define SP_HEADER_LEN 6u
#define SP_CRC_LEN 4u
#define SP_MAX_RAW_FRAME (SP_HEADER_LEN + SP_MAX_PAYLOAD + SP_CRC_LEN) /* 1034 */
#define SP_MAX_ENCODED_FRAME 1039u /* COBS adds at most one byte per 254 */
#define SP_MAX_WIRE_FRAME (SP_MAX_ENCODED_FRAME + 2u) /* with the two 0x00 delimiters */

typedef enum {
    SP_DROP_OVERSIZE = 1, /* more than SP_MAX_ENCODED_FRAME bytes before a delimiter, or a
                             payload_len above SP_MAX_PAYLOAD */
    SP_DROP_COBS,         /* a code byte pointing past the end, or a zero inside a block */
    SP_DROP_SHORT,        /* fewer than header + CRC bytes */
    SP_DROP_CRC,          /* CRC-32C mismatch */
    SP_DROP_LENGTH        /* payload_len differs from the bytes received */
} sp_drop_reason;

typedef enum { SP_NOTHING = 0, SP_GOT_FRAME, SP_GOT_DROP } sp_event;

typedef struct {
    uint8_t msg_type;
    uint8_t flags;
    uint16_t seq;
    uint16_t payload_len;
    const uint8_t *payload; /* points into the receiver; valid until the next byte is pushed */
} sp_frame;

typedef struct {
    uint8_t encoded[SP_MAX_ENCODED_FRAME];
    size_t used;
    int discarding; /* after an oversize run: drop bytes up to the next 0x00 */
    uint8_t raw[SP_MAX_RAW_FRAME];
} sp_receiver;

/* CRC-32C (Castagnoli), reflected, init and xorout 0xFFFFFFFF; bitwise, no table (no flash). */
uint32_t sp_crc32c(const uint8_t *data, size_t len);

/* COBS, canonical (section 2.2). out holds at least len + len / 254 + 1 bytes. */
size_t sp_cobs_encode(const uint8_t *in, size_t len, uint8_t *out);

/* Inverse of sp_cobs_encode into out (at least len bytes); returns the length or -1. */
long sp_cobs_decode(const uint8_t *in, size_t len, uint8_t *out);

/* 00 || COBS(header || payload || crc) || 00 into wire (SP_MAX_WIRE_FRAME bytes); returns its
 * length, or 0 if the payload is too long. */
size_t sp_frame_build(uint8_t msg_type, uint8_t flags, uint16_t seq, const uint8_t *payload,
                      uint16_t payload_len, uint8_t *wire);

void sp_receiver_init(sp_receiver *rx);

/* Feed one received byte. SP_GOT_FRAME fills *frame; SP_GOT_DROP fills *reason. */
sp_event sp_receiver_push(sp_receiver *rx, uint8_t byte, sp_frame *frame, sp_drop_reason *reason);

#endif
