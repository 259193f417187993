"""The UICC of the virtual card (ETSI TS 102 221) with its USIM (3GPP TS 31.102): its Answer To
Reset (atr.py), the file tree and its default contents (files.py), access rules read from EF.ARR
(arr.py), file control parameters (fcp.py), PINs (pins.py) and the file commands
(filesystem.py)."""
