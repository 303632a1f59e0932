// The job Nudge's benchmark workload asks for, written the way a Node developer would with
// socket.io: ack every event, push a banner when a visitor scrolls half-way down an article.
//   node socketio_server.js PORT
"use strict";
const http = require("http");
const { Server } = require("socket.io");

const port = Number(process.argv[2] || 8000);
const server = http.createServer();
const io = new Server(server, { transports: ["websocket"], perMessageDeflate: false, cors: { origin: "*" } });

io.on("connection", (socket) => {
  const visit = { page: null, depth: 0, shown: 0 };
  socket.on("ev", (ev) => {
    const props = ev.props || {};
    if (ev.name === "page_view") {
      visit.page = props.path;
      visit.depth = 0;
    } else if (ev.name === "scroll" && typeof props.depth === "number") {
      if (visit.page && visit.page.startsWith("/article") && visit.depth < 50 && props.depth >= 50) {
        visit.shown += 1;
        socket.emit("show", { seq: visit.shown, campaign: "half-way", kind: "banner", position: "bottom",
          title: "Enjoying the read?", body: "Readers who get this far save 10%." });
      }
      if (props.depth > visit.depth) visit.depth = props.depth;
    }
    socket.emit("ack", { seq: ev.seq });
  });
});

server.listen(port, "127.0.0.1");
