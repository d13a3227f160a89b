package webhook

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime/debug"

	"github.com/go-json-experiment/json/jsontext"
)

// maxRequestSize bounds a review's body, as controller-runtime does: two
// objects of at most 3 MiB and the rest of the request.
const maxRequestSize = 7 << 20

// A state that read a larger body, or decoded longer lists, is not kept
// for reuse: one big review must not keep its memory for good.
const (
	maxPooledBody  = 1 << 20
	maxPooledSlots = 1024
)

// reviewState is the memory one review is served with, reused across
// reviews.
type reviewState struct {
	lr    io.LimitedReader
	body  bytes.Buffer
	dec   decoder
	req   reviewRequest
	patch []byte
	out   []byte
}

func (h *Handler) getState() *reviewState {
	if st, ok := h.states.Get().(*reviewState); ok {
		return st
	}
	st := &reviewState{}
	st.dec.optOut.key, st.dec.optOut.value = h.optOutKey, h.optOutValue
	st.dec.strs = &h.strs
	return st
}

func (h *Handler) putState(st *reviewState) {
	if st.body.Cap() > maxPooledBody || cap(st.out) > maxPooledBody || cap(st.patch) > maxPooledBody ||
		cap(st.dec.scratch) > maxPooledBody {
		return
	}
	p := &st.req.pod
	for _, l := range [...]*stringList{&p.pullSecrets, &p.containers, &p.initContainers, &p.ephemeralContainers} {
		if cap(l.slots) > maxPooledSlots {
			return
		}
	}
	st.lr.R = nil
	h.states.Put(st)
}

// ServeHTTP serves /mutate: it reads the AdmissionReview once, taking only
// what the review uses, and writes the AdmissionReview answering it. A
// body that is not an admission.k8s.io/v1 AdmissionReview with a request is
// refused with HTTP 400 (413 when too large) saying what is wrong: the API
// server then applies the webhook's failurePolicy.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// A panic in reading the review or writing the answer (admit recovers
	// its own) is an HTTP 500: the API server applies the failurePolicy.
	defer func() {
		if p := recover(); p != nil {
			h.log.Error(fmt.Errorf("panic: %v", p), "Serving an admission review panicked", "stack", string(debug.Stack()))
			http.Error(w, "artifactory-pull-webhook: internal error", http.StatusInternalServerError)
		}
	}()
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		h.refuse(w, http.StatusMethodNotAllowed, fmt.Errorf("method %s, expected POST", r.Method))
		return
	}
	if r.Body == nil || r.Body == http.NoBody {
		h.refuse(w, http.StatusBadRequest, errors.New("request body is empty"))
		return
	}
	st := h.getState()
	defer h.putState(st)

	st.lr = io.LimitedReader{R: r.Body, N: maxRequestSize}
	st.body.Reset()
	if _, err := st.body.ReadFrom(&st.lr); err != nil {
		h.refuse(w, http.StatusBadRequest, fmt.Errorf("reading the body: %w", err))
		return
	}
	if st.lr.N <= 0 {
		h.refuse(w, http.StatusRequestEntityTooLarge, fmt.Errorf("request entity is too large; limit is %d bytes", maxRequestSize))
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		h.refuse(w, http.StatusBadRequest, fmt.Errorf("contentType=%s, expected application/json", ct))
		return
	}
	if err := st.dec.decodeReview(&st.body, &st.req); err != nil {
		var bad *badReview
		if !errors.As(err, &bad) {
			err = fmt.Errorf("not a JSON AdmissionReview: %w", err)
		}
		h.refuse(w, http.StatusBadRequest, err)
		return
	}

	a := h.admit(r.Context(), &st.req)

	st.patch = st.req.pod.appendPatch(st.patch[:0], a.add)
	st.out = appendReview(st.out[:0], st.req.uid, a, st.patch)
	w.Header()["Content-Type"] = jsonContentType
	if _, err := w.Write(st.out); err != nil {
		h.log.V(1).Info("Writing the admission response failed", "error", err.Error())
	}
}

var jsonContentType = []string{"application/json"}

// refuse answers a request that is not a review the webhook serves.
func (h *Handler) refuse(w http.ResponseWriter, code int, err error) {
	msg := truncate(err.Error(), 512) // it can quote what the client sent
	h.log.Error(errors.New(msg), "Refused a request to the admission endpoint", "code", code)
	http.Error(w, "artifactory-pull-webhook: "+msg, code)
}

// appendReview appends the AdmissionReview answering uid with a, as
// controller-runtime wrote it: allowed, status code 200, the patch when
// there is one, the warnings.
func appendReview(b []byte, uid string, a answer, patch []byte) []byte {
	b = append(b, `{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","response":{"uid":`...)
	b = appendQuoted(b, uid)
	b = append(b, `,"allowed":true,"status":{"metadata":{},"code":200}`...)
	if len(a.add) > 0 {
		b = append(b, `,"patch":"`...)
		b = base64.StdEncoding.AppendEncode(b, patch)
		b = append(b, `","patchType":"JSONPatch"`...)
	}
	if len(a.warnings) > 0 {
		b = append(b, `,"warnings":[`...)
		for i, w := range a.warnings {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendQuoted(b, w)
		}
		b = append(b, ']')
	}
	return append(b, "}}\n"...)
}

// appendQuoted appends s as a JSON string. Invalid UTF-8 (none reaches
// here: strings read from the review have it replaced, warnings are
// cleaned) would be replaced.
func appendQuoted(b []byte, s string) []byte {
	b, _ = jsontext.AppendQuote(b, s)
	return b
}

var _ http.Handler = (*Handler)(nil)
