"""Small real servers the tunnel tests put behind an agent: an HTTP app with
echo, upload-hash, download, SSE and slow endpoints; a TCP echo server with a
greeting; a WebSocket echo server. Each runs in a thread of the test process."""
import asyncio
import hashlib
import http.server
import json
import socket
import socketserver
import threading
import time
import urllib.parse

BLOCK = bytes(range(256)) * 4096  # 1 MiB, the unit of /bytes


def bytes_sha256(n):
    h = hashlib.sha256()
    full, rest = divmod(n, len(BLOCK))
    for _ in range(full):
        h.update(BLOCK)
    h.update(BLOCK[:rest])
    return h.hexdigest()


class AppHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def reply(self, status, body, ctype="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def read_body(self, sink):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return
                left = size
                while left:
                    chunk = self.rfile.read(min(left, 1 << 20))
                    sink(chunk)
                    left -= len(chunk)
                self.rfile.readline()
        left = int(self.headers.get("Content-Length", "0"))
        while left:
            chunk = self.rfile.read(min(left, 1 << 20))
            if not chunk:
                return
            sink(chunk)
            left -= len(chunk)

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(url.query))
        if url.path == "/bytes":
            n = int(q["n"])
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(n))
            self.end_headers()
            while n:
                part = BLOCK[:min(n, len(BLOCK))]
                self.wfile.write(part)
                n -= len(part)
            return
        if url.path == "/sse":
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i, pause in enumerate((0, float(q.get("gap", "3")))):
                time.sleep(pause)
                ev = b"data: event %d\n\n" % i
                self.wfile.write(b"%x\r\n%s\r\n" % (len(ev), ev))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            return
        if url.path.startswith("/.well-known/sluice-challenge/"):
            # Domain challenges: the tokens this app was told to serve.
            tok = url.path.rsplit("/", 1)[1]
            if tok in getattr(self.server, "challenges", ()):
                return self.reply(200, tok.encode(), "text/plain")
            return self.reply(404, b"no such challenge", "text/plain")
        if url.path == "/slow":
            time.sleep(float(q.get("s", "1")))
        self.reply(200, json.dumps({"method": "GET", "path": self.path, "app": self.server.tag,
                                    "headers": dict(self.headers.items())}).encode())

    def do_POST(self):
        h = hashlib.sha256()
        n = [0]

        def sink(chunk):
            h.update(chunk)
            n[0] += len(chunk)
        self.read_body(sink)
        self.reply(200, json.dumps({"sha256": h.hexdigest(), "bytes": n[0],
                                    "path": self.path}).encode())


class HttpApp:
    """tag: echoed as "app" in GET answers, to tell apps apart."""

    def __init__(self, tag=None):
        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), AppHandler)
        self.srv.tag = tag
        self.srv.daemon_threads = True
        self.port = self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()


class EchoHandler(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.sendall(b"hello from tcp\n")  # the server speaks first
        while True:
            data = self.request.recv(65536)
            if not data:
                return
            self.request.sendall(data)


class TcpEcho:
    def __init__(self):
        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), EchoHandler)
        self.srv.daemon_threads = True
        self.port = self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()


class DropProxy:
    """A TCP proxy to 127.0.0.1:target; while .drop is set it accepts each
    new connection and closes it at once (.dropped counts them): data
    connections that die on their way to the relay."""

    def __init__(self, target):
        self.target, self.drop, self.dropped = target, False, 0
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(1024)
        self.port = self.lsock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            if self.drop:
                self.dropped += 1
                c.close()
                continue
            up = socket.create_connection(("127.0.0.1", self.target))
            for a, b in ((c, up), (up, c)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(a, b):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stop(self):
        self.lsock.close()


class WsEcho:
    """A WebSocket echo server (python3-websockets) on its own event loop."""

    def __init__(self):
        import websockets
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]

        async def echo(ws, path=None):
            async for msg in ws:
                await ws.send(msg)

        async def main():
            self.server = await websockets.serve(echo, sock=sock)
            ready.set()

        def run():
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(main())
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        ready.wait(5)

    def stop(self):
        async def close():
            self.server.close()
            await self.server.wait_closed()
        asyncio.run_coroutine_threadsafe(close(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)


class DnsTxtServer:
    """A real DNS server over UDP on loopback, answering TXT questions from
    self.txt ({name: [strings]}) and NXDOMAIN otherwise: enough of RFC 1035
    for the control plane's resolver (res_nquery) to ask it."""

    def __init__(self):
        import socket
        self.txt = {}
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.running = True
        threading.Thread(target=self._serve, daemon=True).start()

    @staticmethod
    def _name(msg, off):
        labels = []
        while msg[off]:
            n = msg[off]
            labels.append(msg[off + 1:off + 1 + n].decode().lower())
            off += 1 + n
        return ".".join(labels), off + 1

    def _answer(self, q):
        import struct
        qid, _, qd = struct.unpack(">HHH", q[:6])
        name, end = self._name(q, 12)
        qtype = struct.unpack(">H", q[end:end + 2])[0]
        question = q[12:end + 4]
        found = self.txt.get(name)
        if found is None:
            return struct.pack(">HHHHHH", qid, 0x8183, 1, 0, 0, 0) + question
        answers = b""
        n = 0
        if qtype == 16:
            for text in found:
                data = text.encode()
                rdata = bytes([len(data)]) + data
                answers += struct.pack(">HHHIH", 0xC00C, 16, 1, 5, len(rdata)) + rdata
                n += 1
        return struct.pack(">HHHHHH", qid, 0x8180, 1, n, 0, 0) + question + answers

    def _serve(self):
        while self.running:
            try:
                q, addr = self.sock.recvfrom(4096)
                self.sock.sendto(self._answer(q), addr)
            except OSError:
                return
            except Exception:
                continue

    def stop(self):
        self.running = False
        self.sock.close()
