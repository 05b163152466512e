/**
 * cellhop's REST routes (`{base_url}cellhop/api/...`) through JupyterLab's server connection,
 * which adds the base URL, the token or the XSRF cookie, and works behind JupyterHub's prefix.
 */

import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import { Container, GpusView } from './types';

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
}
