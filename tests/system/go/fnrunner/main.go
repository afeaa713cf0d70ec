// fnrunner: a RunnerProtocol server on grpc-go, the gRPC library Fn's pure runner is built on, that
// answers Engage as Fn's pure runner does on the wire: NACK (CallFinished success=false, errorCode 503,
// before any CallResultStart), or CallResultStart, the request body echoed back in DataFrames, then
// CallFinished. It stands in for an Fn runner, so the tests can point fn-core's LB at grpc-go.
//
// Usage: fnrunner -addr 127.0.0.1:PORT [-nack N] [-refuse N] [-fail before|after] [-hold-ms MS] [-frame BYTES]
// [-cert PEM -key PEM -ca PEM]
//
//	-nack N: the first N calls get the NACK
//	-refuse N: the N calls after those end with the gRPC status 503 and no message, Fn's other NACK
//	 (pure_runner.go getTryMsg)
//	-fail before|after: every call ends with the gRPC status INTERNAL, before or after its CallResultStart: a
//	 runner that broke with the call in hand (committed: never to be tried elsewhere)
//	-cert: serve mTLS, as Fn's runner with its node certificate: a client certificate that -ca signed is required
//	-max-age-ms MS: close each connection after about MS (keepalive.ServerParameters.MaxConnectionAge, which
//	 operators set to spread clients over new servers): GOAWAY, then its calls get up to 10 s to end
//
// It prints "listening" once serving, then one line per Engage: "call <id> ran|nacked|refused|failed <bytes in>"
// (with -hold-ms, "call <id> holding <bytes in>" first, once it has the whole body), and one per connection
// accepted: "connection from <address>".
// SIGTERM stops it gracefully (grpc-go's GracefulStop: running calls end, new ones are refused).
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"io/ioutil"
	"net"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	empty "github.com/golang/protobuf/ptypes/empty"
	_struct "github.com/golang/protobuf/ptypes/struct"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"

	runner "runnerpb"
)

type fnRunner struct {
	nackFirst int64 // the first N calls get a NACK
	refuse    int64 // the next N calls after those get the gRPC status 503
	fail      string
	holdMs    int // how long each call "runs" before its answer
	frame     int // response DataFrame size (Fn's runner: 32 KiB at most)
	engaged   int64
	active    int32
	received  uint64
	handled   uint64
	out       sync.Mutex
}

func (r *fnRunner) say(format string, args ...interface{}) {
	r.out.Lock()
	defer r.out.Unlock()
	fmt.Printf(format+"\n", args...)
}

func (r *fnRunner) Engage(stream runner.RunnerProtocol_EngageServer) error {
	atomic.AddUint64(&r.received, 1)
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	try := first.GetTry()
	if try == nil {
		return fmt.Errorf("the first message is not a TryCall")
	}
	var call struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal([]byte(try.ModelsCallJson), &call); err != nil || call.ID == "" {
		return fmt.Errorf("models_call_json has no call id: %v", err)
	}
	engaged := atomic.AddInt64(&r.engaged, 1)
	if engaged <= r.nackFirst {
		r.say("call %s nacked 0", call.ID)
		return stream.Send(&runner.RunnerMsg{Body: &runner.RunnerMsg_Finished{Finished: &runner.CallFinished{
			Success: false, ErrorCode: 503, ErrorStr: "busy", Details: call.ID}}})
	}
	if engaged <= r.nackFirst+r.refuse {
		r.say("call %s refused 0", call.ID)
		return status.Error(codes.Code(503), "Timed out - server too busy")
	}
	if r.fail == "before" {
		r.say("call %s failed 0", call.ID)
		return status.Error(codes.Internal, "the runner broke before answering")
	}
	atomic.AddInt32(&r.active, 1)
	defer atomic.AddInt32(&r.active, -1)
	var body []byte
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		data := msg.GetData()
		if data == nil {
			return fmt.Errorf("a message after TryCall is not a DataFrame")
		}
		body = append(body, data.Data...)
		if data.Eof {
			break
		}
	}
	started := time.Now()
	if r.holdMs > 0 {
		r.say("call %s holding %d", call.ID, len(body))
		select {
		case <-time.After(time.Duration(r.holdMs) * time.Millisecond):
		case <-stream.Context().Done():
			return stream.Context().Err()
		}
	}
	headers := []*runner.HttpHeader{
		{Key: "Content-Type", Value: "application/octet-stream"},
		{Key: "Fn-Go-Runner", Value: call.ID},
		{Key: "Fn-Go-Slot", Value: try.SlotHashId},
	}
	for key, value := range try.Extensions {
		headers = append(headers, &runner.HttpHeader{Key: "Fn-Go-Ext-" + key, Value: value})
	}
	start := &runner.CallResultStart{Meta: &runner.CallResultStart_Http{Http: &runner.HttpRespMeta{StatusCode: 200, Headers: headers}}}
	if err := stream.Send(&runner.RunnerMsg{Body: &runner.RunnerMsg_ResultStart{ResultStart: start}}); err != nil {
		return err
	}
	if r.fail == "after" {
		r.say("call %s failed %d", call.ID, len(body))
		return status.Error(codes.Internal, "the runner broke while answering")
	}
	for sent := 0; sent < len(body); sent += r.frame {
		end := sent + r.frame
		if end > len(body) {
			end = len(body)
		}
		if err := stream.Send(&runner.RunnerMsg{Body: &runner.RunnerMsg_Data{Data: &runner.DataFrame{Data: body[sent:end]}}}); err != nil {
			return err
		}
	}
	r.say("call %s ran %d", call.ID, len(body))
	atomic.AddUint64(&r.handled, 1)
	return stream.Send(&runner.RunnerMsg{Body: &runner.RunnerMsg_Finished{Finished: &runner.CallFinished{
		Success: true, Details: call.ID, CreatedAt: started.Format(time.RFC3339Nano),
		ExecutionDuration: int64(time.Since(started))}}})
}

// the stats.Handler that says each connection accepted
func (r *fnRunner) TagConn(ctx context.Context, info *stats.ConnTagInfo) context.Context {
	r.say("connection from %s", info.RemoteAddr)
	return ctx
}
func (r *fnRunner) HandleConn(context.Context, stats.ConnStats)                     {}
func (r *fnRunner) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (r *fnRunner) HandleRPC(context.Context, stats.RPCStats)                       {}

func (r *fnRunner) status() *runner.RunnerStatus {
	return &runner.RunnerStatus{Active: atomic.LoadInt32(&r.active), Id: "fnrunner",
		RequestsReceived: atomic.LoadUint64(&r.received), RequestsHandled: atomic.LoadUint64(&r.handled),
		CustomStatus: map[string]string{"grpc-go": grpc.Version}}
}

func (r *fnRunner) Status(context.Context, *empty.Empty) (*runner.RunnerStatus, error) {
	return r.status(), nil
}

func (r *fnRunner) Status2(context.Context, *_struct.Struct) (*runner.RunnerStatus, error) {
	return r.status(), nil
}

func (r *fnRunner) ConfigureRunner(context.Context, *runner.ConfigMsg) (*runner.ConfigStatus, error) {
	return &runner.ConfigStatus{}, nil
}

func (r *fnRunner) StreamLogs(runner.RunnerProtocol_StreamLogsServer) error {
	return nil
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "address to listen on")
	nack := flag.Int64("nack", 0, "NACK the first N calls")
	refuse := flag.Int64("refuse", 0, "end the N calls after those with the gRPC status 503")
	fail := flag.String("fail", "", "end every call with INTERNAL, before or after its result start")
	hold := flag.Int("hold-ms", 0, "hold each call this long before answering")
	frame := flag.Int("frame", 32*1024, "response DataFrame size")
	cert := flag.String("cert", "", "serve mTLS with this certificate (PEM)")
	key := flag.String("key", "", "the certificate's key (PEM)")
	ca := flag.String("ca", "", "the CA that signs client certificates (PEM)")
	maxAge := flag.Int("max-age-ms", 0, "close each connection after about this long (0: never)")
	flag.Parse()
	lis, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// no keepalive.EnforcementPolicy: grpc-go's default (a PING at most every 5 min while calls are open,
	// none without), which is what an Fn runner that does not set one enforces
	fn := &fnRunner{nackFirst: *nack, refuse: *refuse, fail: *fail, holdMs: *hold, frame: *frame}
	options := []grpc.ServerOption{grpc.StatsHandler(fn)}
	if *maxAge > 0 {
		options = append(options, grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionAge: time.Duration(*maxAge) * time.Millisecond, MaxConnectionAgeGrace: 10 * time.Second}))
	}
	if *cert != "" {
		options = append(options, grpc.Creds(credentials.NewTLS(mutualTLS(*cert, *key, *ca))))
	}
	server := grpc.NewServer(options...)
	runner.RegisterRunnerProtocolServer(server, fn)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-stop
		server.GracefulStop()
	}()
	fmt.Printf("listening %s grpc-go %s\n", lis.Addr(), grpc.Version)
	if err := server.Serve(lis); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func mutualTLS(certFile, keyFile, caFile string) *tls.Config {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	authority, err := ioutil.ReadFile(caFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(authority)
	return &tls.Config{Certificates: []tls.Certificate{pair}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert}
}
