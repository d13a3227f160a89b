package main

import (
	"errors"
	"net/http"
	"time"
)

// withDeadlines bounds how long one review may take to arrive and to be answered.
//
// controller-runtime's webhook server bounds only the headers (32s) and idle
// connections (90s): a client that sends its headers and then trickles the
// body, or never reads the answer, holds a connection and a goroutine for as
// long as it likes. Here the body must arrive within read of the handler
// starting, and the answer must be written within write. The deadlines are
// those of the connection (HTTP/1.1) or of the stream (HTTP/2, where the
// connection stays up for its other streams).
//
// The read deadline cannot cut a review short once its body has arrived:
// net/http lifts it when the body hits EOF, and an HTTP/2 stream's only closes
// the body. The write deadline stays set when the handler returns, since the
// server writes the buffered answer after that; the next review on a
// keep-alive connection sets its own.
func withDeadlines(h http.Handler, read, write time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		now := time.Now()
		for _, set := range []func() error{
			func() error { return rc.SetReadDeadline(now.Add(read)) },
			func() error { return rc.SetWriteDeadline(now.Add(write)) },
		} {
			// ErrNotSupported only comes from a ResponseWriter that is not
			// the server's own (a recorder): there is no connection to bound.
			if err := set(); err != nil && !errors.Is(err, http.ErrNotSupported) {
				http.Error(w, "setting connection deadlines: "+err.Error(), http.StatusInternalServerError)
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}
