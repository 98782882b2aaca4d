// Calls of the admin API. Every change carries the session's CSRF token.
let csrf = null;

export function setCsrf(token) { csrf = token; }

export async function api(method, path, body) {
  const opts = { method, headers: {}, credentials: 'same-origin' };
  if (body !== undefined) {
    opts.headers['Content-Type'] = 'application/json';
    opts.body = JSON.stringify(body);
  }
  if (method !== 'GET' && csrf) opts.headers['X-CSRF-Token'] = csrf;
  const r = await fetch(path, opts);
  let data = null;
  try { data = await r.json(); } catch { data = null; }
  if (!r.ok) {
    const e = new Error((data && data.error) || `${r.status} ${r.statusText}`);
    e.status = r.status;
    throw e;
  }
  return data;
}

export const get = path => api('GET', path);
export const post = (path, body) => api('POST', path, body ?? {});
export const q = params => {
  const s = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== '') s.set(k, v);
  const t = s.toString();
  return t ? '?' + t : '';
};
