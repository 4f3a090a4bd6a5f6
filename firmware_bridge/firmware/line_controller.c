/* Reference line-controller firmware (ATmega328P, e.g. Arduino Uno/Nano, 16 MHz).
 *
 * PD2 (Arduino D2): photo-eye, active low, debounced -> sends TRIGGER(seq, PRODUCT_ID).
 * PB0 (Arduino D8): reject gate, driven high for GATE_MS on a REJECT verdict (fail-safe
 *                   verdicts from the host included).
 * PB5 (Arduino D13): link LED, on while host heartbeats arrive.
 * UART 115200 8N1: edge-runtime wire protocol v1 (edge_protocol.c).
 * If the host does not answer a trigger within LOCAL_DEADLINE_MS, the part is rejected
 * locally: a part is never passed without a verdict.
 *
 * Written Arduino-style (setup/loop) on plain avr-libc so it builds with avr-gcc alone.
 */
#include <avr/interrupt.h>
#include <avr/io.h>
#include <stdint.h>

#include "edge_protocol.h"

#ifndef F_CPU
#define F_CPU 16000000UL
#endif
#define BAUD 115200UL
#define PRODUCT_ID 1
#define DEBOUNCE_MS 5
#define GATE_MS 150
#define LOCAL_DEADLINE_MS 250
#define HEARTBEAT_MS 1000
#define HOST_SILENT_MS 3000

static volatile uint32_t millis_count;
ISR(TIMER0_COMPA_vect) { millis_count++; }

static uint32_t millis(void) {
    uint32_t value;
    uint8_t sreg = SREG;
    cli();
    value = millis_count;
    SREG = sreg;
    return value;
}

static void uart_init(void) {
    uint16_t ubrr = (uint16_t)((F_CPU / (8UL * BAUD)) - 1); /* double speed */
    UCSR0A = _BV(U2X0);
    UBRR0H = (uint8_t)(ubrr >> 8);
    UBRR0L = (uint8_t)ubrr;
    UCSR0B = _BV(RXEN0) | _BV(TXEN0);
    UCSR0C = _BV(UCSZ01) | _BV(UCSZ00);
}

static void uart_write(const uint8_t *data, size_t len) {
    for (size_t i = 0; i < len; i++) {
        while (!(UCSR0A & _BV(UDRE0))) {
        }
        UDR0 = data[i];
    }
}

static int uart_read(uint8_t *byte) {
    if (!(UCSR0A & _BV(RXC0))) {
        return 0;
    }
    *byte = UDR0;
    return 1;
}

static void send(uint8_t type, uint16_t seq, const uint8_t *body, uint8_t len) {
    edge_message msg;
    uint8_t frame[EDGE_MAX_FRAME];
    msg.type = type;
    msg.seq = seq;
    msg.len = len;
    for (uint8_t i = 0; i < len; i++) {
        msg.body[i] = body[i];
    }
    uart_write(frame, edge_encode(&msg, frame));
}

static edge_reader reader;
static uint16_t next_seq = 1;
static uint16_t pending_seq;
static uint8_t pending;
static uint32_t pending_since, gate_until, last_heartbeat_sent, last_host_seen;
static uint8_t eye_state = 1;
static uint32_t eye_changed;

static void gate_reject(uint32_t now) {
    PORTB |= _BV(PB0);
    gate_until = now + GATE_MS;
}

void setup(void) {
    DDRB |= _BV(PB0) | _BV(PB5);
    DDRD &= (uint8_t)~_BV(PD2);
    PORTD |= _BV(PD2); /* pull-up: photo-eye pulls low */
    TCCR0A = _BV(WGM01);
    TCCR0B = _BV(CS01) | _BV(CS00); /* clk/64 */
    OCR0A = (uint8_t)(F_CPU / 64 / 1000 - 1);
    TIMSK0 = _BV(OCIE0A);
    uart_init();
    edge_reader_init(&reader);
    sei();
}

static void handle(const edge_message *msg, uint32_t now) {
    last_host_seen = now;
    if (msg->type == EDGE_VERDICT && msg->len == 6 && pending && msg->seq == pending_seq) {
        pending = 0;
        if (msg->body[0] == EDGE_REJECT) {
            gate_reject(now);
        }
    }
}

void loop(void) {
    uint32_t now = millis();
    uint8_t byte;
    edge_message msg;
    while (uart_read(&byte)) {
        if (edge_reader_feed(&reader, byte, &msg)) {
            handle(&msg, now);
        }
    }
    uint8_t eye = (PIND & _BV(PD2)) ? 1 : 0;
    if (eye != eye_state && now - eye_changed >= DEBOUNCE_MS) {
        eye_state = eye;
        eye_changed = now;
        if (eye == 0) { /* falling edge: part present */
            uint8_t body[2] = {PRODUCT_ID & 0xFF, PRODUCT_ID >> 8};
            if (pending) { /* previous part never got an answer: reject it */
                gate_reject(now);
            }
            pending_seq = next_seq++;
            pending = 1;
            pending_since = now;
            send(EDGE_TRIGGER, pending_seq, body, 2);
        }
    }
    if (pending && now - pending_since > LOCAL_DEADLINE_MS) {
        pending = 0;
        gate_reject(now);
    }
    if (gate_until && (int32_t)(now - gate_until) >= 0) {
        PORTB &= (uint8_t)~_BV(PB0);
        gate_until = 0;
    }
    if (now - last_heartbeat_sent >= HEARTBEAT_MS) {
        uint8_t body[4] = {(uint8_t)now, (uint8_t)(now >> 8), (uint8_t)(now >> 16),
                           (uint8_t)(now >> 24)};
        last_heartbeat_sent = now;
        send(EDGE_HEARTBEAT, next_seq++, body, 4);
    }
    if (now - last_host_seen < HOST_SILENT_MS) {
        PORTB |= _BV(PB5);
    } else {
        PORTB &= (uint8_t)~_BV(PB5);
    }
}

int main(void) {
    setup();
    for (;;) {
        loop();
    }
}
