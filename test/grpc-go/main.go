// A grpc-go peer for the interop tests of ctxflow's gRPC adapter (test/grpc-go.test.ts).
// It needs no .proto: messages are raw bytes (JSON from the tests) through a pass-through codec.
//
//	grpc-go-peer server
//	    Serves every method on 127.0.0.1 (ephemeral port); prints "listening PORT", then one JSON
//	    line per event: "start" (the deadline and metadata the call arrived with), "done" (the
//	    call's context ended first: its error) and "end" (answered). A request {"sleepMs": N}
//	    waits N ms, or until the call's context ends.
//	grpc-go-peer client -addr HOST:PORT -method /pkg.Service/Method [-timeout D] [-cancel-after D] [-request JSON]
//	    Connects, waits until ready, then makes one unary call with a context of that timeout,
//	    cancelled after -cancel-after if set; prints one JSON line: the status and the response.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// rawCodec passes message bytes through. Named "proto" so the content-type is the usual one.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	switch m := v.(type) {
	case *[]byte:
		return *m, nil
	case []byte:
		return m, nil
	}
	return nil, fmt.Errorf("rawCodec: cannot marshal %T", v)
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	p, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("rawCodec: cannot unmarshal into %T", v)
	}
	*p = append([]byte(nil), data...)
	return nil
}

func (rawCodec) Name() string { return "proto" }

var out sync.Mutex

func emit(event map[string]any) {
	line, err := json.Marshal(event)
	if err != nil {
		line = []byte(fmt.Sprintf(`{"event":"error","err":%q}`, err.Error()))
	}
	out.Lock()
	defer out.Unlock()
	os.Stdout.Write(append(line, '\n'))
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: grpc-go-peer server | client -addr HOST:PORT -method /pkg.Service/Method ...")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "server":
		serve()
	case "client":
		call(os.Args[2:])
	default:
		fmt.Fprintf(os.Stderr, "unknown mode %q\n", os.Args[1])
		os.Exit(2)
	}
}

type request struct {
	ID      string `json:"id"`
	SleepMs int    `json:"sleepMs"`
}

func serve() {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	server := grpc.NewServer(grpc.ForceServerCodec(rawCodec{}), grpc.UnknownServiceHandler(handle))
	fmt.Printf("listening %d\n", listener.Addr().(*net.TCPAddr).Port)
	// Stops when the test closes stdin (or kills the process).
	go func() {
		buf := make([]byte, 1)
		for {
			if _, err := os.Stdin.Read(buf); err != nil {
				server.Stop()
				return
			}
		}
	}()
	if err := server.Serve(listener); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func handle(_ any, stream grpc.ServerStream) error {
	ctx := stream.Context()
	method, _ := grpc.MethodFromServerStream(stream)
	var body []byte
	if err := stream.RecvMsg(&body); err != nil {
		return err
	}
	var req request
	_ = json.Unmarshal(body, &req)
	md, _ := metadata.FromIncomingContext(ctx)
	started := map[string]any{"event": "start", "id": req.ID, "method": method, "metadata": md, "hasDeadline": false}
	if deadline, ok := ctx.Deadline(); ok {
		started["hasDeadline"] = true
		started["remainingMs"] = float64(time.Until(deadline).Microseconds()) / 1000
	}
	emit(started)
	if req.SleepMs > 0 {
		select {
		case <-time.After(time.Duration(req.SleepMs) * time.Millisecond):
		case <-ctx.Done():
			emit(map[string]any{"event": "done", "id": req.ID, "err": ctx.Err().Error()})
			return status.FromContextError(ctx.Err()).Err()
		}
	}
	answer, _ := json.Marshal(started)
	if err := stream.SendMsg(&answer); err != nil {
		return err
	}
	emit(map[string]any{"event": "end", "id": req.ID})
	return nil
}

func call(args []string) {
	flags := flag.NewFlagSet("client", flag.ExitOnError)
	addr := flags.String("addr", "", "server address")
	method := flags.String("method", "", "full method name, /pkg.Service/Method")
	timeout := flags.Duration("timeout", 0, "deadline of the call (0: none)")
	cancelAfter := flags.Duration("cancel-after", 0, "cancel the call after this long (0: never)")
	body := flags.String("request", "{}", "request message (bytes, JSON for the tests)")
	_ = flags.Parse(args)

	conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer conn.Close()
	waitReady(conn)

	ctx, cancel := context.WithCancel(context.Background())
	if *timeout > 0 {
		ctx, cancel = context.WithTimeout(context.Background(), *timeout)
	}
	defer cancel()
	if *cancelAfter > 0 {
		time.AfterFunc(*cancelAfter, cancel)
	}
	req := []byte(*body)
	var resp []byte
	started := time.Now()
	err = conn.Invoke(ctx, *method, &req, &resp, grpc.ForceCodec(rawCodec{}))
	result := map[string]any{
		"code":      status.Code(err).String(),
		"elapsedMs": float64(time.Since(started).Microseconds()) / 1000,
		"response":  string(resp),
	}
	if err != nil {
		result["message"] = status.Convert(err).Message()
	}
	emit(result)
}

func waitReady(conn *grpc.ClientConn) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn.Connect()
	for state := conn.GetState(); state != connectivity.Ready; state = conn.GetState() {
		if !conn.WaitForStateChange(ctx, state) {
			return
		}
	}
}
