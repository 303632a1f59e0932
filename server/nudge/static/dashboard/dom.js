// What the dashboard's scripts share: building elements and SVG with text set as text, never as
// HTML (nothing from the server is parsed as markup).
(function () {
  "use strict";
  var SVG = "http://www.w3.org/2000/svg";

  function make(node, attrs, text) {
    for (var k in attrs || {}) node.setAttribute(k, attrs[k]);
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  window.NudgeDom = {
    el: function (tag, attrs, text) { return make(document.createElement(tag), attrs, text); },
    svg: function (tag, attrs, text) { return make(document.createElementNS(SVG, tag), attrs, text); },
  };
})();
