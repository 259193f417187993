"""Virtual smart cards for the bureau's local stack and tests (the card side of the contract).

- `card`: the card OS (ATR, APDU dispatch, ISO status words, T=0/T=1 response rules)
- `gp` / `scp03`: the GlobalPlatform card manager (ISD) and its SCP03 secure channel, the only
  way personalization data reaches an application
- `emv`: the payment application of docs/perso-protocol.md (STORE DATA perso, FCI, READ RECORD,
  GENERATE AC with the ARQC); `crypto`: CPG202-AES, EMV session key, retail MAC
- `store`: the chip's NVM, one JSON file per chip serial, so a card moves between readers
- `wire`: vpcd's TCP protocol, the card being the client of 127.0.0.1:<port>
- `feeder` / `api`: the encoding machine's hopper and transport, with an HTTP control API
"""
