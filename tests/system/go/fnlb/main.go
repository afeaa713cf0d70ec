// fnlb: drives a RunnerProtocol runner the way Fn's LB does (api/agent/runner_client.go), on grpc-go,
// the gRPC library Fn's LB is built on: one Engage stream per call, a TryCall, the request body in
// 10 KiB DataFrames with eof on the last, then CallResultStart, DataFrames and CallFinished read back.
// A CallFinished before any CallResultStart is a NACK. It stands in for an Fn LB, so the tests can
// drive fn-core's runner with grpc-go.
//
// Usage: fnlb < plan.json > results.json
//
//	plan: {"addr": "127.0.0.1:PORT", "concurrency": N, "calls": [{"call_json": "...", "slot_hash_id": "...",
//	       "extensions": {...}, "body_size": BYTES, "body": "TEXT", "seed": S, "timeout_ms": MS, "after_ms": MS,
//	       "delay_ms": MS}], "status": bool, "tls": {"cert": PEM, "key": PEM, "ca": PEM}}
//	after_ms: wait for the calls before it to end, then this long (a quiet connection) before it starts
//	delay_ms: start this long after its turn comes, while the calls before it may still run
//	tls: mTLS to the runner, as Fn's LB with its node certificate (the runner's must be for 127.0.0.1, whatever
//	its address, as Fn's LB checks it)
//	body: TEXT if given, else BYTES bytes of ((seed + i) % 251), so neither side ships them in JSON
//
// results: {"grpc_go": version, "calls": [{"nack": bool, "status": int, "headers": [[k, v], ...],
// "body_len": n, "body_sha256": hex, "finished": {...}, "messages": ["start", "data", ..., "finished"],
// "error": "grpc status if the stream failed"}], "status": {...} (Status, when asked, after the calls)}
package main

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/ioutil"
	"os"
	"sync"
	"time"

	empty "github.com/golang/protobuf/ptypes/empty"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	runner "runnerpb"
)

const frameSize = 10 * 1024 // Fn's LB sends the body in frames of this size

type plannedCall struct {
	CallJSON   string            `json:"call_json"`
	SlotHashID string            `json:"slot_hash_id"`
	Extensions map[string]string `json:"extensions"`
	Body       *string           `json:"body"`
	BodySize   int               `json:"body_size"`
	Seed       int               `json:"seed"`
	TimeoutMs  int               `json:"timeout_ms"`
	AfterMs    int               `json:"after_ms"`
	DelayMs    int               `json:"delay_ms"`
}

type plan struct {
	Addr        string        `json:"addr"`
	Concurrency int           `json:"concurrency"`
	Calls       []plannedCall `json:"calls"`
	Status      bool          `json:"status"`
	TLS         *struct {
		Cert string `json:"cert"`
		Key  string `json:"key"`
		CA   string `json:"ca"`
	} `json:"tls"`
}

type finished struct {
	Success   bool   `json:"success"`
	Details   string `json:"details"`
	ErrorCode int32  `json:"error_code"`
	ErrorStr  string `json:"error_str"`
	ErrorUser bool   `json:"error_user"`
}

type result struct {
	Nack       bool        `json:"nack"`
	Status     int32       `json:"status"`
	Headers    [][2]string `json:"headers"`
	BodyLen    int         `json:"body_len"`
	BodySha256 string      `json:"body_sha256"`
	Finished   *finished   `json:"finished"`
	Messages   []string    `json:"messages"`
	Error      string      `json:"error"`
}

func pattern(size, seed int) []byte {
	body := make([]byte, size)
	for i := range body {
		body[i] = byte((seed + i) % 251)
	}
	return body
}

// note appends a message kind, runs of data frames counted once ("data") so the order stays readable
func (r *result) note(kind string) {
	if kind == "data" && len(r.Messages) > 0 && r.Messages[len(r.Messages)-1] == "data" {
		return
	}
	r.Messages = append(r.Messages, kind)
}

func engage(client runner.RunnerProtocolClient, call plannedCall) (res result) {
	res.Messages = []string{}
	timeout := time.Duration(call.TimeoutMs) * time.Millisecond
	if timeout == 0 {
		timeout = 60 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	stream, err := client.Engage(ctx)
	if err != nil {
		res.Error = err.Error()
		return
	}
	try := &runner.TryCall{ModelsCallJson: call.CallJSON, SlotHashId: call.SlotHashID, Extensions: call.Extensions}
	if err := stream.Send(&runner.ClientMsg{Body: &runner.ClientMsg_Try{Try: try}}); err != nil {
		res.Error = err.Error()
		return
	}
	// the body goes from its own goroutine, as Fn's LB sends it: the answer may start before it has all gone
	go func() {
		body := pattern(call.BodySize, call.Seed)
		if call.Body != nil {
			body = []byte(*call.Body)
		}
		for sent := 0; ; sent += frameSize {
			end := sent + frameSize
			if end > len(body) {
				end = len(body)
			}
			last := end == len(body)
			if err := stream.Send(&runner.ClientMsg{Body: &runner.ClientMsg_Data{Data: &runner.DataFrame{Data: body[sent:end], Eof: last}}}); err != nil {
				return // the receive side sees why
			}
			if last {
				stream.CloseSend()
				return
			}
		}
	}()
	digest := sha256.New()
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			res.Error = err.Error()
			break
		}
		switch body := msg.Body.(type) {
		case *runner.RunnerMsg_ResultStart:
			res.note("start")
			meta := body.ResultStart.GetHttp()
			if meta != nil {
				res.Status = meta.StatusCode
				for _, h := range meta.Headers {
					res.Headers = append(res.Headers, [2]string{h.Key, h.Value})
				}
			}
		case *runner.RunnerMsg_Data:
			res.note("data")
			res.BodyLen += len(body.Data.Data)
			digest.Write(body.Data.Data)
		case *runner.RunnerMsg_Finished:
			res.note("finished")
			f := body.Finished
			res.Finished = &finished{Success: f.Success, Details: f.Details, ErrorCode: f.ErrorCode, ErrorStr: f.ErrorStr, ErrorUser: f.ErrorUser}
			res.Nack = len(res.Messages) == 1 && f.ErrorCode == 503 // a 503 finish before any result start: isTooBusy
		}
	}
	res.BodySha256 = hex.EncodeToString(digest.Sum(nil))
	return
}

func main() {
	var p plan
	if err := json.NewDecoder(os.Stdin).Decode(&p); err != nil {
		fmt.Fprintln(os.Stderr, "bad plan:", err)
		os.Exit(2)
	}
	// Fn's LB dials its runners with keepalive (60 s, 10 s), as its system tests do
	security := grpc.WithInsecure()
	if p.TLS != nil {
		pair, err := tls.LoadX509KeyPair(p.TLS.Cert, p.TLS.Key)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		authority, err := ioutil.ReadFile(p.TLS.CA)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(authority)
		// ServerName as Fn's LB sets it (grpcutil.CreateCredentials): every runner's certificate is checked for 127.0.0.1
		security = grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{ServerName: "127.0.0.1",
			Certificates: []tls.Certificate{pair}, RootCAs: pool}))
	}
	dialing, dialed := context.WithTimeout(context.Background(), 20*time.Second)
	defer dialed()
	conn, err := grpc.DialContext(dialing, p.Addr, security, grpc.WithBlock(),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 60 * time.Second, Timeout: 10 * time.Second}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		fmt.Fprintln(os.Stderr, "dial:", err)
		os.Exit(1)
	}
	defer conn.Close()
	client := runner.NewRunnerProtocolClient(conn)
	if p.Concurrency < 1 {
		p.Concurrency = 1
	}
	results := make([]result, len(p.Calls))
	slots := make(chan struct{}, p.Concurrency)
	var wg sync.WaitGroup
	for i, call := range p.Calls {
		if call.AfterMs > 0 {
			wg.Wait() // a pause comes after the calls before it have ended: the connection is quiet
			time.Sleep(time.Duration(call.AfterMs) * time.Millisecond)
		}
		slots <- struct{}{}
		wg.Add(1)
		go func(i int, call plannedCall) {
			defer wg.Done()
			time.Sleep(time.Duration(call.DelayMs) * time.Millisecond)
			results[i] = engage(client, call)
			<-slots
		}(i, call)
	}
	wg.Wait()
	out := map[string]interface{}{"grpc_go": grpc.Version, "calls": results}
	if p.Status {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		status, err := client.Status(ctx, &empty.Empty{})
		if err != nil {
			out["status_error"] = err.Error()
		} else {
			out["status"] = map[string]interface{}{"active": status.Active, "requests_received": status.RequestsReceived,
				"requests_handled": status.RequestsHandled, "is_network_disabled": status.IsNetworkDisabled, "id": status.Id}
		}
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		os.Exit(1)
	}
}
