# A console-socket server as engines run one (conmon, containerd): receives the pty master
# over SCM_RIGHTS, types a command into it and prints what the terminal shows.
import socket, os, sys, array, time, select
path = sys.argv[1]
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(path); srv.listen(1)
print("listening", flush=True)
conn, _ = srv.accept()
msg, fds, flags, addr = socket.recv_fds(conn, 1024, 1)
master = fds[0]
os.write(master, b"tty; echo hello-$((40+2)); exit 3\n")
out = b""
deadline = time.time() + 10
while time.time() < deadline:
    r, _, _ = select.select([master], [], [], 0.5)
    if r:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk: break
        out += chunk
        if b"hello-42" in out and out.count(b"\n") >= 3: break
print("name=" + msg.decode(), flush=True)
sys.stdout.write(out.decode(errors="replace"))
