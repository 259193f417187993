// notecheck verifies a C2SP signed note (read on stdin) with golang.org/x/mod/sumdb/note, the
// Go reference implementation of signed notes, independently of the bureau's Python code.
// Arguments are vkeys: type 0x02 (ECDSA P-256 over SHA-256 of the text, key ID = SHA-256 of
// the SPKI) and type 0x04 (cosignature/v1, c2sp.org/tlog-cosignature) are verified here from
// the C2SP text; note.Open does the parsing, key matching and the rule that every known key's
// signature must verify. Prints the note text and the names of the keys that verified as JSON;
// exits 1 if the note does not verify.
package main

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

type verifier struct {
	name   string
	hash   uint32
	verify func(msg, sig []byte) bool
}

func (v verifier) Name() string                { return v.name }
func (v verifier) KeyHash() uint32             { return v.hash }
func (v verifier) Verify(msg, sig []byte) bool { return v.verify(msg, sig) }

func parseVkey(vkey string) (note.Verifier, error) {
	parts := strings.SplitN(vkey, "+", 3)
	if len(parts) != 3 {
		return nil, fmt.Errorf("malformed vkey %q", vkey)
	}
	name := parts[0]
	id, err := hex.DecodeString(parts[1])
	if err != nil || len(id) != 4 {
		return nil, fmt.Errorf("malformed key id in %q", vkey)
	}
	raw, err := base64.StdEncoding.DecodeString(parts[2])
	if err != nil || len(raw) < 2 {
		return nil, fmt.Errorf("malformed key in %q", vkey)
	}
	hash := binary.BigEndian.Uint32(id)
	key := raw[1:]
	switch raw[0] {
	case 0x02:
		sum := sha256.Sum256(key)
		if binary.BigEndian.Uint32(sum[:4]) != hash {
			return nil, fmt.Errorf("key id of %q does not match its key", name)
		}
		pub, err := x509.ParsePKIXPublicKey(key)
		if err != nil {
			return nil, err
		}
		ec, ok := pub.(*ecdsa.PublicKey)
		if !ok {
			return nil, fmt.Errorf("%q is not an ECDSA key", name)
		}
		return verifier{name, hash, func(msg, sig []byte) bool {
			digest := sha256.Sum256(msg)
			return ecdsa.VerifyASN1(ec, digest[:], sig)
		}}, nil
	case 0x04:
		if len(key) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("%q is not an Ed25519 key", name)
		}
		sum := sha256.Sum256(append([]byte(name+"\n\x04"), key...))
		if binary.BigEndian.Uint32(sum[:4]) != hash {
			return nil, fmt.Errorf("key id of %q does not match its key", name)
		}
		return verifier{name, hash, func(msg, sig []byte) bool {
			if len(sig) != 8+ed25519.SignatureSize {
				return false
			}
			t := binary.BigEndian.Uint64(sig[:8])
			signed := append([]byte("cosignature/v1\ntime "+strconv.FormatUint(t, 10)+"\n"), msg...)
			return ed25519.Verify(ed25519.PublicKey(key), signed, sig[8:])
		}}, nil
	}
	return nil, fmt.Errorf("signature type %#x of %q is not supported here", raw[0], name)
}

func main() {
	msg, err := io.ReadAll(os.Stdin)
	if err != nil {
		panic(err)
	}
	var verifiers []note.Verifier
	for _, arg := range os.Args[1:] {
		v, err := parseVkey(arg)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		verifiers = append(verifiers, v)
	}
	n, err := note.Open(msg, note.VerifierList(verifiers...))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	names := []string{}
	for _, sig := range n.Sigs {
		names = append(names, sig.Name)
	}
	out, _ := json.Marshal(map[string]any{"text": n.Text, "verified": names})
	fmt.Println(string(out))
}
