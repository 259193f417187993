"""QA's EMV terminal kernel, written from EMV 4.3 Books 1-3 (never from the card's code):
application selection through the PSE and the PPSE, GET PROCESSING OPTIONS with PDOL data,
READ RECORD over the AFL, offline data authentication (SDA, DDA, CDA) with the CA public keys
of configuration, offline plaintext PIN, GENERATE AC first and second. See docs/terminal.md."""
