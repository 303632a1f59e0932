// The demo shop's own behaviour: a cart kept in localStorage (so it survives navigation), the
// cart count in the header, add-to-cart buttons, the checkout page. Every cart change is also
// reported to Nudge with nudge.track(); nudge.js itself is loaded by the snippet in each page.
(function () {
  'use strict';

  var CART_KEY = 'shop:cart';

  // The catalogue, keyed by the data-product attribute of the buttons.
  var PRODUCTS = {
    mug: { name: 'Stoneware mug', price: 12.5 },
    'tea-towel': { name: 'Linen tea towel', price: 9 },
    teapot: { name: 'Cast-iron teapot', price: 48 },
    notebook: { name: 'Dot-grid notebook', price: 14 },
    candle: { name: 'Beeswax candle', price: 18.5 },
    throw: { name: 'Wool throw', price: 65 }
  };

  function readCart() {
    try {
      var cart = JSON.parse(localStorage.getItem(CART_KEY));
      return Array.isArray(cart) ? cart : [];
    } catch (e) {
      return [];
    }
  }

  function writeCart(cart) {
    try {
      localStorage.setItem(CART_KEY, JSON.stringify(cart));
    } catch (e) {
      // private mode: the cart lives as long as the page
    }
    showCount(cart);
  }

  function count(cart) {
    return cart.reduce(function (n, line) { return n + line.quantity; }, 0);
  }

  function total(cart) {
    return Math.round(cart.reduce(function (sum, line) { return sum + line.price * line.quantity; }, 0) * 100) / 100;
  }

  function money(value) {
    return '\u20AC' + value.toFixed(2);
  }

  function showCount(cart) {
    var el = document.getElementById('cart-count');
    if (el) el.textContent = String(count(cart));
  }

  function flash(text) {
    var el = document.getElementById('flash');
    if (el) el.textContent = text;
  }

  function addToCart(id) {
    var product = PRODUCTS[id];
    if (!product) return;
    var cart = readCart();
    var line = cart.filter(function (l) { return l.id === id; })[0];
    if (line) line.quantity += 1;
    else cart.push({ id: id, name: product.name, price: product.price, quantity: 1 });
    writeCart(cart);
    nudge.track('add_to_cart', { id: id, name: product.name, price: product.price, quantity: 1 });
    flash(product.name + ' added to your cart.');
  }

  function removeFromCart(id) {
    var cart = readCart().filter(function (l) { return l.id !== id; });
    writeCart(cart);
    nudge.track('remove_from_cart', { id: id });
    renderCheckout();
  }

  function placeOrder() {
    var cart = readCart();
    if (!cart.length) return;
    var orderId = String(Date.now()).slice(-6);
    nudge.track('purchase', { value: total(cart), order_id: orderId });
    writeCart([]);
    renderCheckout();
    var done = document.getElementById('confirmation');
    done.hidden = false;
    done.textContent = 'Thank you! Order #' + orderId + ' is on its way.';
  }

  function renderCheckout() {
    var list = document.getElementById('cart-lines');
    if (!list) return;
    var cart = readCart();
    list.textContent = '';
    cart.forEach(function (line) {
      var li = document.createElement('li');
      li.setAttribute('data-product', line.id);
      var art = document.createElement('span');
      art.className = 'art';
      art.setAttribute('aria-hidden', 'true');
      art.textContent = line.name.charAt(0);
      var name = document.createElement('span');
      name.textContent = line.name;
      var qty = document.createElement('span');
      qty.className = 'qty';
      qty.textContent = line.quantity + ' \u00D7 ' + money(line.price);
      var remove = document.createElement('button');
      remove.type = 'button';
      remove.className = 'button quiet remove';
      remove.textContent = 'Remove';
      remove.setAttribute('aria-label', 'Remove ' + line.name);
      remove.addEventListener('click', function () { removeFromCart(line.id); });
      li.append(art, name, qty, remove);
      list.appendChild(li);
    });
    document.getElementById('cart-empty').hidden = cart.length > 0;
    document.getElementById('cart-total').textContent = money(total(cart));
    document.getElementById('place-order').disabled = cart.length === 0;
  }

  document.addEventListener('click', function (e) {
    var add = e.target.closest && e.target.closest('button.add-to-cart');
    if (add) addToCart(add.getAttribute('data-product'));
  });

  var order = document.getElementById('place-order');
  if (order) order.addEventListener('click', placeOrder);

  // Another tab changed the cart.
  window.addEventListener('storage', function (e) {
    if (e.key !== CART_KEY) return;
    showCount(readCart());
    renderCheckout();
  });

  showCount(readCart());
  renderCheckout();
})();
