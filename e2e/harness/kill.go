package harness

// Kill ends the process at once (SIGKILL), as a crashed node would: nothing
// is cleaned up, and a leader lease it holds stays taken until it expires.
func (w *Webhook) Kill() {
	if w.cmd.Process == nil {
		return
	}
	_ = w.cmd.Process.Kill()
	<-w.done
}
