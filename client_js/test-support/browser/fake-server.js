// In-page stand-in for the Nudge server: replaces window.WebSocket before nudge.js loads.
// Every socket is accepted with nudge.v1.json, answered with welcome, and its events are
// acknowledged unless window.holdAcks is set. Results go to sessionStorage so that a check made
// on one page can be reported from the next; index.html, the top page, prints them.
(function () {
  var sockets = (window.sockets = []);
  window.results = JSON.parse(sessionStorage.getItem('test:results') || '[]');
  window.check = function (name, ok, detail) {
    results.push([location.pathname + ' ' + name, !!ok, detail === undefined ? null : detail]);
    sessionStorage.setItem('test:results', JSON.stringify(results));
  };
  window.report = function () {
    sessionStorage.setItem('test:done', '1'); // index.html prints the results
  };
  window.sleep = function (ms) {
    return new Promise(function (r) { setTimeout(r, ms); });
  };
  function FakeSocket(url, protocols) {
    var ws = this;
    sockets.push(ws);
    ws.url = url;
    ws.protocols = protocols;
    ws.protocol = '';
    ws.readyState = 0;
    ws.sent = [];
    setTimeout(function () {
      ws.readyState = 1;
      ws.protocol = 'nudge.v1.json';
      ws.onopen && ws.onopen({});
    }, 5);
  }
  FakeSocket.prototype.send = function (data) {
    var m = JSON.parse(data);
    this.sent.push(m);
    var ws = this;
    if (m.t === 'hello') {
      setTimeout(function () {
        ws.push({ t: 'welcome', session: m.session || 's_browser', visitor: m.visitor, resumed: !!m.session, ack: window.welcomeAck || 0, grace: 300 });
      }, 5);
    } else if (m.t === 'ev' && !window.holdAcks) {
      ws.push({ t: 'ack', seq: m.seq });
    } else if (m.t === 'evs' && !window.holdAcks) {
      ws.push({ t: 'ack', seq: m.events[m.events.length - 1].seq }); // one cumulative ack
    }
  };
  FakeSocket.prototype.close = function () {
    this.readyState = 3;
  };
  FakeSocket.prototype.push = function (record) {
    this.onmessage && this.onmessage({ data: JSON.stringify(record) });
  };
  // Every event written: those of ev frames and each one of an evs frame.
  FakeSocket.prototype.events = function (name) {
    var all = [];
    this.sent.forEach(function (m) {
      if (m.t === 'ev') all.push(m);
      else if (m.t === 'evs') all.push.apply(all, m.events);
    });
    return all.filter(function (m) { return !name || m.name === name; });
  };
  window.WebSocket = FakeSocket;
})();
