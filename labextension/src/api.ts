/**
 * cellhop's REST routes (`{base_url}cellhop/api/...`) through JupyterLab's server connection,
 * which adds the base URL, the token or the XSRF cookie, and works behind JupyterHub's prefix.
 */

import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import { Container, GpusView } from './types';

/** Progress of one upload: bytes sent of the total (null while the browser does not say). */
export type UploadProgress = (sent: number, total: number | null) => void;

/** The `_xsrf` cookie, as ServerConnection reads it (the last one wins, as tornado reads it). */
export function xsrfCookie(): string | undefined {
  let value: string | undefined;
  for (const part of (typeof document !== 'undefined' ? document.cookie : '').split(';')) {
    const trimmed = part.trim();
    if (trimmed.startsWith('_xsrf=')) {
      value = trimmed.slice('_xsrf='.length);
    }
  }
  return value;
}

/** The message of a JSON error body (`{"error", "message"}`), else the status in words. */
export function errorMessage(status: number, statusText: string, text: string): string {
  try {
    const body = text ? JSON.parse(text) : null;
    if (body && typeof body.message === 'string' && body.message) {
      return body.message;
    }
  } catch {
    // not JSON: fall through
  }
  return status ? `${status} ${statusText}`.trim() : "cellhop's server cannot be reached";
}

export class CellhopApiError extends Error {
  constructor(
    readonly status: number,
    message: string
  ) {
    super(message);
  }
}

export class CellhopApi {
  constructor(readonly settings: ServerConnection.ISettings = ServerConnection.makeSettings()) {}

  url(...parts: string[]): string {
    return URLExt.join(this.settings.baseUrl, 'cellhop', 'api', ...parts);
  }

  async request<T>(path: string[], init: RequestInit = {}, query = ''): Promise<T> {
    let response: Response;
    try {
      response = await ServerConnection.makeRequest(this.url(...path) + query, init, this.settings);
    } catch (err) {
      throw new CellhopApiError(0, `cellhop's server cannot be reached: ${err}`);
    }
    const text = await response.text();
    let body: any = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch {
      body = null;
    }
    if (!response.ok) {
      const message =
        body?.message ||
        (response.status === 404
          ? `${path.join('/')} is not served here (is the cellhop server extension enabled?)`
          : `${response.status} ${response.statusText}`);
      throw new CellhopApiError(response.status, message);
    }
    return body as T;
  }

  gpus(): Promise<GpusView> {
    return this.request<GpusView>(['gpus']);
  }

  async containers(): Promise<Container[]> {
    return (await this.request<{ containers: Container[] }>(['containers'])).containers;
  }

  stop(id: string): Promise<Container> {
    return this.request<Container>(['containers', id, 'stop'], { method: 'POST' });
  }

  async logs(id: string, tail = 2000): Promise<string> {
    return (await this.request<{ log: string }>(['containers', id, 'logs'], {}, `?tail=${tail}`)).log;
  }

  /** `GET images` or `GET volumes`: the list under the route's own name (`{"images": [...]}`). */
  async list(route: 'images' | 'volumes'): Promise<Record<string, unknown>[]> {
    const body = await this.request<Record<string, unknown>>([route]);
    const items = body?.[route];
    return Array.isArray(items) ? (items as Record<string, unknown>[]) : [];
  }

  // Volumes (docs/api.md, "Volumes"): paths inside a volume travel in `?path=`.

  static pathQuery(path: string, extra = ''): string {
    return `?path=${encodeURIComponent(path)}${extra}`;
  }

  createVolume(body: { name: string; quota?: string }): Promise<Record<string, unknown>> {
    return this.request(['volumes'], { method: 'POST', body: JSON.stringify(body) });
  }

  volumeUsage(name: string): Promise<unknown> {
    return this.request(['volumes', name, 'usage']);
  }

  files(name: string, path: string): Promise<unknown> {
    return this.request(['volumes', name, 'files'], {}, CellhopApi.pathQuery(path));
  }

  deleteFile(name: string, path: string, recursive = false): Promise<unknown> {
    return this.request(['volumes', name, 'files'], { method: 'DELETE' }, CellhopApi.pathQuery(path, recursive ? '&recursive=1' : ''));
  }

  mkdir(name: string, path: string): Promise<unknown> {
    return this.request(['volumes', name, 'mkdir'], { method: 'POST', body: JSON.stringify({ path }) });
  }

  /**
   * The download route as a URL for an `<a download>`: the browser streams the file to disk
   * with its login cookie; `_xsrf` rides along as JupyterLab's own file downloads do.
   */
  downloadUrl(name: string, path: string): string {
    const xsrf = xsrfCookie();
    return this.url('volumes', name, 'download') + CellhopApi.pathQuery(path, xsrf ? `&_xsrf=${encodeURIComponent(xsrf)}` : '');
  }

  /**
   * `PUT volumes/{name}/upload?path=...` with the File itself as the body: the browser streams
   * it from disk (XMLHttpRequest, for upload progress), with the same token or XSRF header
   * ServerConnection sends. Resolves with the new entry; rejects with the server's message.
   */
  upload(name: string, path: string, file: Blob, onProgress?: UploadProgress): { done: Promise<unknown>; abort: () => void } {
    const xhr = new XMLHttpRequest();
    const done = new Promise<unknown>((resolve, reject) => {
      xhr.open('PUT', this.url('volumes', name, 'upload') + CellhopApi.pathQuery(path));
      if (this.settings.token) {
        xhr.setRequestHeader('Authorization', `token ${this.settings.token}`);
      }
      const xsrf = xsrfCookie();
      if (xsrf !== undefined) {
        xhr.setRequestHeader('X-XSRFToken', xsrf);
      }
      xhr.setRequestHeader('Content-Type', 'application/octet-stream');
      xhr.upload.onprogress = e => onProgress?.(e.loaded, e.lengthComputable ? e.total : null);
      xhr.onload = () => {
        if (xhr.status >= 200 && xhr.status < 300) {
          try {
            resolve(JSON.parse(xhr.responseText));
          } catch {
            resolve(null);
          }
        } else {
          reject(new CellhopApiError(xhr.status, errorMessage(xhr.status, xhr.statusText, xhr.responseText)));
        }
      };
      xhr.onerror = () => reject(new CellhopApiError(0, 'the connection closed before the server answered'));
      xhr.onabort = () => reject(new CellhopApiError(0, 'the upload was cancelled'));
      xhr.send(file);
    });
    return { done, abort: () => xhr.abort() };
  }

  // Secrets: names and keys come back, values never do.

  secrets(): Promise<unknown> {
    return this.request(['secrets']);
  }

  createSecret(name: string, values: Record<string, string>, replace = false): Promise<unknown> {
    return this.request(['secrets'], { method: 'POST', body: JSON.stringify({ name, values, replace }) });
  }

  deleteSecret(name: string): Promise<unknown> {
    return this.request(['secrets', name], { method: 'DELETE' });
  }
}
