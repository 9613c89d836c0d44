"""The contract between the bank and the partner, and between the bank's services: what both
parties' code depends on, and nothing else does. Pure: no I/O.

- `catalog`: every topic, its owner and the record it carries.
- `stream_messages`: the records on the topics (Avro, schemas/*.avsc).
- `exchange_messages`: one typed class per cross-party message (Avro, schemas/exchange/*.avsc).
- `kinds`: the table of message kinds: sender, receiver, message class, what the receiver learns.
- `exchange`: the envelope every cross-party message travels in (`ExchangeMessage`): building one
  from a message (`envelope`), checking an incoming one against the table and decoding its payload.
- `identity`: national-id normalisation and `id_hash`, the identity both parties align on.
- `bank_keys`: the bank's Redis key layouts that more than one service reads.
"""
