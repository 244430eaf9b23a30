// The receipt page's logic: sign in (OpenID Connect through keycloak-js, or a modelport token), turn a
// photo into a grey JPEG of at most 1600 pixels a side, upload it through a presigned URL, call the
// `receipt-payments` pipeline with the stored object and show the payment details it read.
//
// Everything the server sends is shown with `textContent`, never parsed as HTML.

export const PIPELINE = 'receipt-payments';
export const BUCKET = 'receipt-uploads';
export const MAX_SIDE = 1600;
export const JPEG_QUALITY = 0.9;

const TOKEN_KEY = 'modelport-token';
const SIGNED_IN_KEY = 'modelport-oidc-signed-in';
const ABSENT = '—';

// Configuration

/** The platform's address without a trailing slash; '' is the server this page came from. */
export function platformUrl() {
  const meta = document.querySelector('meta[name="modelport-url"]');
  const configured = window.MODELPORT_URL || meta?.getAttribute('content') || '';
  return configured.trim().replace(/\/+$/, '');
}

/** This page's address as an OpenID Connect redirect URI: no query, no fragment, no `index.html`. */
export function pageUrl() {
  return `${location.origin}${location.pathname.replace(/index\.html$/, '')}`;
}

// Talking to the platform

/** An answer of the platform other than 2xx, with its error code (`pipeline_not_found`, ...). */
export class ApiError extends Error {
  constructor(status, code, message, { requestId = null, retryAfter = null } = {}) {
    super(message || `HTTP ${status}`);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.requestId = requestId;
    this.retryAfter = retryAfter;
  }
}

/** The platform could not be reached, or the browser kept its answer from the page (CORS). */
export class Unreachable extends Error {
  constructor(url, cause) {
    super(`no answer from ${url}`, { cause });
    this.name = 'Unreachable';
    this.url = url;
  }
}

/** Signing in through the provider did not work: it could not be reached, or it answered an OAuth error. */
export class SignInFailed extends Error {
  constructor(issuer, cause) {
    super(`signing in at ${issuer} failed`, { cause });
    this.name = 'SignInFailed';
    this.issuer = issuer;
    this.reason = typeof cause?.error === 'string' ? cause.error : null;
  }
}

/** The sign-in has run out and cannot be renewed here. */
export class SignInAgain extends Error {
  constructor() {
    super('the sign-in has expired');
    this.name = 'SignInAgain';
  }
}

async function send(url, options) {
  try {
    return await fetch(url, options);
  } catch (error) {
    throw new Unreachable(url, error);
  }
}

/** The JSON body of a successful answer; any other answer becomes an `ApiError`. */
async function answer(response) {
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  if (response.ok) {
    return body;
  }
  const error = body?.error ?? {};
  throw new ApiError(response.status, typeof error.code === 'string' ? error.code : null, error.message, {
    requestId: response.headers.get('X-Request-Id'),
    retryAfter: response.headers.get('Retry-After'),
  });
}

async function callApi(auth, method, path, body) {
  const headers = { 'Content-Type': 'application/json' };
  const authorization = await auth.authorization();
  if (authorization) {
    headers.Authorization = authorization;
  }
  const response = await send(`${platformUrl()}${path}`, { method, headers, body: JSON.stringify(body) });
  return answer(response);
}

/** `{"oidc": {"issuer", "client_id"}}`, or `{"oidc": null}` where the platform has no browser sign-in. */
export async function fetchAuthConfig() {
  return answer(await send(`${platformUrl()}/api/v1/auth/config`, { headers: { Accept: 'application/json' } }));
}

// Signing in

/** A modelport token (`mp_...`) typed in by the user, kept in this tab's sessionStorage. */
class TokenAuth {
  kind = 'token';

  constructor() {
    this.token = sessionStorage.getItem(TOKEN_KEY);
  }

  get signedIn() {
    return Boolean(this.token);
  }

  get who() {
    return 'Signed in with a modelport token';
  }

  use(token) {
    sessionStorage.setItem(TOKEN_KEY, token);
    this.token = token;
  }

  async authorization() {
    return this.token ? `Bearer ${this.token}` : null;
  }

  forget() {
    sessionStorage.removeItem(TOKEN_KEY);
    this.token = null;
  }

  async signOut() {
    this.forget();
  }
}

/** Sign-in through the platform's OpenID Connect provider: authorization code with PKCE, a public client. */
class OidcAuth {
  kind = 'oidc';

  constructor(keycloak) {
    this.keycloak = keycloak;
  }

  static async start(oidc) {
    const { default: Keycloak } = await import('./vendor/keycloak.js');
    const keycloak = new Keycloak({ oidcProvider: oidc.issuer, clientId: oidc.client_id });
    // Signed in before in this tab: ask the provider again, without a prompt (it redirects straight back).
    const returning = sessionStorage.getItem(SIGNED_IN_KEY) === '1';
    let authenticated;
    try {
      authenticated = await keycloak.init({
        pkceMethod: 'S256',
        checkLoginIframe: false,
        redirectUri: pageUrl(),
        ...(returning ? { onLoad: 'check-sso' } : {}),
      });
    } catch (error) {
      sessionStorage.removeItem(SIGNED_IN_KEY);
      throw new SignInFailed(oidc.issuer, error);
    }
    if (authenticated) {
      sessionStorage.setItem(SIGNED_IN_KEY, '1');
    } else {
      sessionStorage.removeItem(SIGNED_IN_KEY);
    }
    return new OidcAuth(keycloak);
  }

  get signedIn() {
    return Boolean(this.keycloak.authenticated);
  }

  get who() {
    const claims = this.keycloak.tokenParsed ?? {};
    return `Signed in as ${claims.preferred_username || claims.email || claims.sub}`;
  }

  signIn() {
    return this.keycloak.login({ redirectUri: pageUrl() });
  }

  /** `Bearer <access token>`, renewed first where it expires within 30 s. */
  async authorization() {
    if (!this.keycloak.authenticated) {
      return null;
    }
    if (this.keycloak.refreshToken) {
      try {
        await this.keycloak.updateToken(30);
      } catch {
        throw new SignInAgain();
      }
    } else if (this.expiresWithin(30)) {
      throw new SignInAgain(); // the provider gave no refresh token: only a new sign-in renews it
    }
    return `Bearer ${this.keycloak.token}`;
  }

  // keycloak-js's own isTokenExpired() refuses to answer without a refresh token.
  expiresWithin(seconds) {
    const { tokenParsed, timeSkew } = this.keycloak;
    const left = tokenParsed.exp - Math.ceil(Date.now() / 1000) + (timeSkew ?? 0);
    return left < seconds;
  }

  forget() {
    sessionStorage.removeItem(SIGNED_IN_KEY);
    this.keycloak.clearToken();
  }

  async signOut() {
    sessionStorage.removeItem(SIGNED_IN_KEY);
    try {
      await this.keycloak.logout({ redirectUri: pageUrl() });
    } catch {
      this.keycloak.clearToken(); // a provider without a logout endpoint: forget the tokens here
    }
  }
}

// The photo

/** The browser could not open the file as an image. */
export class PhotoUnreadable extends Error {
  constructor(cause) {
    super('the browser cannot open this file as an image', { cause });
    this.name = 'PhotoUnreadable';
  }
}

/** The photo as it is sent: drawn upright, scaled so its longer side is at most MAX_SIDE (never up),
 * turned grey and encoded as a JPEG. Returns `{blob, width, height}`. */
export async function preparePhoto(file) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(file, { imageOrientation: 'from-image' });
  } catch (error) {
    throw new PhotoUnreadable(error);
  }
  const scale = Math.min(1, MAX_SIDE / Math.max(bitmap.width, bitmap.height));
  const width = Math.max(1, Math.round(bitmap.width * scale));
  const height = Math.max(1, Math.round(bitmap.height * scale));
  const canvas = document.createElement('canvas');
  canvas.width = width;
  canvas.height = height;
  const context = canvas.getContext('2d', { willReadFrequently: true });
  context.fillStyle = '#fff'; // transparent pixels would turn black in a JPEG
  context.fillRect(0, 0, width, height);
  context.imageSmoothingQuality = 'high';
  context.drawImage(bitmap, 0, 0, width, height);
  bitmap.close();
  toGrey(context, width, height);
  const blob = await new Promise((resolve, reject) => {
    canvas.toBlob(
      (made) => (made ? resolve(made) : reject(new PhotoUnreadable(null))),
      'image/jpeg',
      JPEG_QUALITY,
    );
  });
  return { blob, width, height };
}

function toGrey(context, width, height) {
  const image = context.getImageData(0, 0, width, height);
  const pixels = image.data;
  for (let i = 0; i < pixels.length; i += 4) {
    const grey = Math.round(0.299 * pixels[i] + 0.587 * pixels[i + 1] + 0.114 * pixels[i + 2]);
    pixels[i] = grey;
    pixels[i + 1] = grey;
    pixels[i + 2] = grey;
  }
  context.putImageData(image, 0, 0);
}

function randomName() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, '0')).join('');
}

/** Upload the photo under a fresh key through a presigned URL, then call the pipeline with it. */
export async function readReceipt(auth, photo) {
  const key = `${randomName()}.jpg`;
  const presigned = await callApi(auth, 'POST', `/api/v1/storage/${BUCKET}/presign`, {
    key,
    method: 'PUT',
    size: photo.blob.size,
    expires_in: 600,
  });
  // The URL is the credential: no Authorization header. The blob's type is sent as Content-Type.
  const url = new URL(presigned.url, platformUrl() || location.href);
  await answer(await send(url, { method: 'PUT', body: photo.blob }));
  const result = await callApi(auth, 'POST', `/api/v1/pipelines/${PIPELINE}/predict`, {
    inputs: { image: { object: `${BUCKET}/${key}` } },
  });
  return result?.outputs ?? {};
}

// Showing what was read

const PAYMENT_METHODS = { card: 'Card', cash: 'Cash', mixed: 'Card and cash' };

const FISCAL = [
  ['fn', 'Fiscal drive', 'ФН'],
  ['fd', 'Fiscal document', 'ФД'],
  ['fp', 'Fiscal sign', 'ФП'],
  ['kkt_reg', 'Register number', 'РН ККТ'],
  ['shift', 'Shift', 'смена'],
  ['receipt_number', 'Receipt number', 'чек'],
];

const present = (value) => value !== null && value !== undefined && value !== '';

function amount(outputs) {
  if (!present(outputs.total)) {
    return null;
  }
  const total = typeof outputs.total === 'number' ? outputs.total.toFixed(2) : String(outputs.total);
  return present(outputs.currency) ? `${total} ${outputs.currency}` : total;
}

/** The fields shown, in order: [name, English label, Russian label or null, the value as text or null]. */
export function describe(outputs) {
  const method = outputs.payment_method;
  return [
    ['total', 'Total', 'итог', amount(outputs)],
    ['date', 'Date', null, present(outputs.date) ? String(outputs.date) : null],
    ['time', 'Time', null, present(outputs.time) ? String(outputs.time) : null],
    ['merchant', 'Seller', null, present(outputs.merchant) ? String(outputs.merchant) : null],
    ['inn', 'Taxpayer number', 'ИНН', present(outputs.inn) ? String(outputs.inn) : null],
    ['payment_method', 'Paid by', null, present(method) ? (PAYMENT_METHODS[method] ?? String(method)) : null],
    ['card_last4', 'Card', null, present(outputs.card_last4) ? `•••• ${outputs.card_last4}` : null],
  ];
}

function label(english, russian) {
  const term = document.createElement('dt');
  term.append(english);
  if (russian) {
    const native = document.createElement('span');
    native.lang = 'ru';
    native.className = 'native';
    native.textContent = `(${russian})`;
    term.append(' ', native);
  }
  return term;
}

function fiscalList(fiscal) {
  if (!fiscal || typeof fiscal !== 'object') {
    return present(fiscal) ? String(fiscal) : null;
  }
  const list = document.createElement('ul');
  list.className = 'fiscal';
  for (const [key, english, russian] of FISCAL) {
    if (present(fiscal[key])) {
      const item = document.createElement('li');
      const name = document.createElement('abbr');
      name.lang = 'ru';
      name.textContent = russian;
      name.title = english;
      item.append(name, ` ${String(fiscal[key])}`);
      item.dataset.field = key;
      list.append(item);
    }
  }
  return list.childElementCount ? list : null;
}

function row(list, name, term, value) {
  const definition = document.createElement('dd');
  definition.dataset.field = name;
  if (value === null) {
    definition.textContent = ABSENT;
    definition.classList.add('absent');
  } else {
    definition.append(value); // a string becomes a text node, never markup
  }
  list.append(term, definition);
}

/** Fill the definition list and the OCR text from the pipeline's outputs. */
export function renderResult(outputs, { fields, text }) {
  fields.replaceChildren();
  for (const [name, english, russian, value] of describe(outputs ?? {})) {
    row(fields, name, label(english, russian), value);
  }
  row(fields, 'fiscal', label('Fiscal numbers', null), fiscalList(outputs?.fiscal));
  text.textContent = present(outputs?.text) ? String(outputs.text) : 'No text was read from the photo.';
}

// What went wrong, in plain words

/** `[message, detail]` for an error, the detail naming the server's error code where there is one. */
export function explain(error) {
  if (error instanceof SignInAgain) {
    return ['Your sign-in has expired: sign in again.', null];
  }
  if (error instanceof PhotoUnreadable) {
    return ['This browser cannot open the file as an image. Choose a JPEG or PNG photo.', null];
  }
  if (error instanceof SignInFailed) {
    const why = error.reason ? 'the sign-in service refused it' : 'the sign-in service could not be reached';
    return [
      `Signing in did not work: ${why}. Reload the page to try again.`,
      error.reason ? `Error code: ${error.reason}` : null,
    ];
  }
  if (error instanceof Unreachable) {
    return [
      `The service at ${new URL(error.url, location.href).origin} could not be reached, or it does not ` +
        'accept calls from this page. Check your connection and try again.',
      null,
    ];
  }
  if (!(error instanceof ApiError)) {
    return ['Something went wrong in this page. Reload it and try again.', `${error.name}: ${error.message}`];
  }
  return [plainWords(error), detail(error)];
}

function plainWords({ status, code, retryAfter }) {
  const later = retryAfter ? ` in ${retryAfter} seconds` : ' in a minute';
  switch (status) {
    case 401:
      return 'Your sign-in was not accepted or has expired: sign in again.';
    case 403:
      return 'This service refused the request. Sign in again, or ask for access.';
    case 404:
      if (code === 'pipeline_not_found' || code === 'bucket_not_found') {
        return 'Your account may not use this service. Ask its administrators for access.';
      }
      return 'The service is not available on this platform.';
    case 413:
      return 'The photo is too large. Take it again, closer to the receipt.';
    case 415:
      return 'The photo is not an image the service reads. Choose a JPEG or PNG photo.';
    case 422:
      return 'The service could not read this photo. Take it again: the whole receipt, flat and sharp.';
    case 429:
      return `Too many receipts in a short time: slow down and try again${later}.`;
    case 503:
      return `The service is busy or starting: try again${later}.`;
    case 504:
      return 'The service took too long to read the receipt: try again later.';
    case 507:
      return 'The storage for photos is full: try again later.';
    default:
      return status >= 500 ? 'The service failed: try again later.' : 'The service refused the request.';
  }
}

function detail({ status, code, requestId }) {
  const parts = [`Error code: ${code ?? `HTTP ${status}`}`];
  if (requestId) {
    parts.push(`request ${requestId}`);
  }
  return parts.join(' · ');
}

// The page

function elements() {
  const byId = (id) => document.getElementById(id);
  return {
    who: byId('who'),
    signIn: byId('sign-in'),
    signOut: byId('sign-out'),
    tokenForm: byId('token-form'),
    token: byId('token'),
    photoPanel: byId('photo-panel'),
    drop: byId('drop'),
    photo: byId('photo'),
    status: byId('status'),
    problem: byId('problem'),
    problemText: byId('problem-text'),
    problemCode: byId('problem-code'),
    result: byId('result'),
    preview: byId('preview'),
    details: byId('details'),
    fields: byId('fields'),
    text: byId('ocr-text'),
  };
}

class Page {
  constructor(ui) {
    this.ui = ui;
    this.auth = null;
    this.previewUrl = null;
    this.busy = false;
  }

  setState(state, status = '') {
    document.body.dataset.state = state;
    this.ui.status.textContent = status;
  }

  showProblem(error) {
    const [message, code] = explain(error);
    this.ui.problemText.textContent = message;
    this.ui.problemCode.textContent = code ?? '';
    this.ui.problem.hidden = false;
    this.setState('error');
  }

  clearProblem() {
    this.ui.problem.hidden = true;
    this.ui.problemText.textContent = '';
    this.ui.problemCode.textContent = '';
  }

  /** Show what the current sign-in allows: the photo, or the way to sign in. */
  showAccount() {
    const { ui, auth } = this;
    const signedIn = auth.signedIn;
    ui.who.hidden = !signedIn;
    ui.who.textContent = signedIn ? auth.who : '';
    ui.signOut.hidden = !signedIn;
    ui.signIn.hidden = signedIn || auth.kind !== 'oidc';
    ui.tokenForm.hidden = signedIn || auth.kind !== 'token';
    ui.photoPanel.hidden = !signedIn;
  }

  async start() {
    const { ui } = this;
    this.setState('starting', 'Loading…');
    try {
      const config = await fetchAuthConfig();
      this.auth = config?.oidc ? await OidcAuth.start(config.oidc) : new TokenAuth();
    } catch (error) {
      this.showProblem(error);
      return;
    }
    ui.signIn.addEventListener('click', () => this.auth.signIn());
    ui.signOut.addEventListener('click', () => this.signOut());
    ui.tokenForm.addEventListener('submit', (event) => this.useToken(event));
    ui.photo.addEventListener('change', () => this.chosen(ui.photo.files));
    this.listenForDrops();
    this.showAccount();
    this.setState('ready', this.auth.signedIn ? '' : 'Sign in to read receipts.');
  }

  useToken(event) {
    event.preventDefault();
    const token = this.ui.token.value.trim();
    if (!token.startsWith('mp_')) {
      this.ui.token.setCustomValidity('A modelport token starts with mp_.');
      this.ui.token.reportValidity();
      return;
    }
    this.ui.token.setCustomValidity('');
    this.ui.token.value = '';
    this.auth.use(token);
    this.clearProblem();
    this.showAccount();
    this.setState('ready');
    this.ui.photo.focus();
  }

  async signOut() {
    this.ui.result.hidden = true;
    this.ui.fields.replaceChildren();
    this.clearProblem();
    await this.auth.signOut();
    this.showAccount();
    this.setState('ready', 'Signed out.');
  }

  listenForDrops() {
    const { drop } = this.ui;
    const over = (event) => {
      event.preventDefault();
      drop.classList.add('dragging');
    };
    drop.addEventListener('dragenter', over);
    drop.addEventListener('dragover', over);
    drop.addEventListener('dragleave', () => drop.classList.remove('dragging'));
    drop.addEventListener('drop', (event) => {
      event.preventDefault();
      drop.classList.remove('dragging');
      this.chosen(event.dataTransfer?.files);
    });
  }

  async chosen(files) {
    const file = files?.[0];
    if (!file || this.busy || !this.auth?.signedIn) {
      return;
    }
    this.busy = true;
    this.clearProblem();
    try {
      this.setState('busy', 'Preparing the photo…');
      const photo = await preparePhoto(file);
      this.showPhoto(photo);
      this.setState('busy', 'Reading the receipt…');
      const outputs = await readReceipt(this.auth, photo);
      renderResult(outputs, this.ui);
      this.ui.details.hidden = false;
      this.setState('done', 'Done: the receipt is read.');
    } catch (error) {
      this.failed(error);
    } finally {
      this.busy = false;
      this.ui.photo.value = ''; // the same file may be chosen again
    }
  }

  showPhoto(photo) {
    const { ui } = this;
    if (this.previewUrl) {
      URL.revokeObjectURL(this.previewUrl);
    }
    this.previewUrl = URL.createObjectURL(photo.blob);
    ui.preview.src = this.previewUrl;
    ui.preview.width = photo.width;
    ui.preview.height = photo.height;
    ui.details.hidden = true;
    ui.fields.replaceChildren();
    ui.text.textContent = '';
    ui.result.hidden = false;
  }

  failed(error) {
    if (error instanceof SignInAgain || (error instanceof ApiError && error.status === 401)) {
      this.auth.forget();
      this.showAccount();
    }
    this.showProblem(error);
  }
}

const page = new Page(elements());
page.start();
