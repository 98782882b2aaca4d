// The console's shell: session, login, navigation by the URL's hash, and
// the periodic refresh of live pages.
import { h, errorBox } from './dom.js';
import { get, post, setCsrf } from './api.js';
import * as pages from './pages.js';
import { browser } from './browse.js';
import { queuesPage, queuePage } from './queues.js';

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const who = document.getElementById('who');
const banner = document.getElementById('banner');
let session = null;
let generation = 0;

function showBanner(text) {
  banner.hidden = !text;
  banner.replaceChildren(text || '');
}

function loginForm(message) {
  nav.hidden = true;
  who.replaceChildren();
  const user = h('input', { name: 'user', autocomplete: 'username', required: true });
  const password = h('input', { name: 'password', type: 'password', autocomplete: 'current-password', required: true });
  const err = h('div');
  const form = h('form', {},
    h('label', {}, 'User', user),
    h('label', {}, 'Password', password),
    h('button', { type: 'submit' }, 'Log in'), err);
  form.addEventListener('submit', async ev => {
    ev.preventDefault();
    try {
      start(await post('/api/login', { user: user.value, password: password.value }));
    } catch (e) {
      err.replaceChildren(errorBox(e));
    }
  });
  main.replaceChildren(h('div', { class: 'login' }, h('h1', {}, 'Log in to pgbroker'),
    message ? h('p', { class: 'muted' }, message) : null, form));
  user.focus();
}

function start(s) {
  session = s;
  setCsrf(s.csrf);
  nav.hidden = false;
  const out = h('button', { class: 'secondary', onclick: logout }, 'Log out');
  who.replaceChildren(s.user ? h('span', {}, s.user) : h('span', {}, 'no users'), s.user ? out : '');
  showBanner(s.open ? 'This broker has no users, so the console is served only to loopback clients and asks for no login. ' +
    'Add a user (pgbroker user add NAME) to require one.' : '');
  route();
}

async function logout() {
  try { await post('/api/logout'); } catch { /* the session may be gone already */ }
  session = null;
  setCsrf(null);
  loginForm('Logged out.');
}

function parseHash() {
  const parts = location.hash.replace(/^#\/?/, '').split('/').filter(Boolean).map(decodeURIComponent);
  return parts.length ? parts : ['overview'];
}

// Renders the page of the hash (its live parts refresh themselves).
async function route() {
  if (!session) return;
  const my = ++generation;
  const [page, name, sub] = parseHash();
  for (const a of nav.querySelectorAll('a')) a.classList.toggle('active', a.dataset.page === page);
  let view;
  switch (page) {
    case 'overview': view = pages.overview; break;
    case 'topics':
      if (name && sub === 'messages') view = () => browser(name);
      else if (name) view = () => pages.topicPage(name);
      else view = pages.topicsPage;
      break;
    case 'groups': view = name ? () => pages.groupPage(name) : pages.groupsPage; break;
    case 'queues': view = name ? () => queuePage(name) : queuesPage; break;
    case 'users': view = pages.usersPage; break;
    default: view = async () => h('p', {}, 'No such page.');
  }
  try {
    const el = await view();
    if (my === generation) main.replaceChildren(el);
  } catch (e) {
    if (my !== generation) return;
    if (e.status === 401) { session = null; loginForm('Your session has ended; log in again.'); return; }
    main.replaceChildren(errorBox(e));
  }
}

window.addEventListener('hashchange', route);

(async () => {
  try {
    start(await get('/api/session'));
  } catch (e) {
    if (e.status === 401) loginForm();
    else { nav.hidden = true; main.replaceChildren(h('h1', {}, 'pgbroker console'), errorBox(e)); }
  }
})();
