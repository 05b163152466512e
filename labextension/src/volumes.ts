/**
 * The Volumes section: the list of volumes (create, delete, usage), and one volume's folders
 * (breadcrumb, download, delete, upload by drag and drop or the Upload button, usage bar).
 *
 * Uploads go to `PUT volumes/{name}/upload` with the File itself as the body, so the browser
 * streams it from disk; downloads are `<a download>` links, streamed by the browser to disk.
 */

import { CellhopApi, CellhopApiError } from './api';
import { button, h, message, replaceKeeping, usageMeter } from './dom';
import { formatAge, formatBytes } from './format';
import {
  breadcrumbs,
  checkVolumeForm,
  fileNameError,
  joinPath,
  parentPath,
  parseEntries,
  parseUsage,
  parseVolumes,
  quotaExcess,
  VolumeEntry,
  VolumeInfo,
  VolumeUsage
} from './storage';

export interface StorageOptions {
  api: CellhopApi;
  /** A yes/no question (JupyterLab's dialog); resolves true on yes. */
  confirm: (title: string, body: string, accept: string) => Promise<boolean>;
  /** A line of text from the user (JupyterLab's dialog); null when cancelled. */
  prompt: (title: string, placeholder: string) => Promise<string | null>;
}

interface UploadRow {
  id: number;
  name: string;
  sent: number;
  total: number;
}

export class VolumesView {
  constructor(private readonly options: StorageOptions) {
    this.node = h('div', { className: 'jp-CellhopPanel-volumes' });
    this.fileInput = h('input', { type: 'file', multiple: true, className: 'jp-CellhopVolumes-uploadInput' }) as HTMLInputElement;
    this.fileInput.hidden = true;
    this.fileInput.onchange = () => {
      const files = [...(this.fileInput.files ?? [])];
      this.fileInput.value = '';
      void this.uploadFiles(files);
    };
    this.uploadsEl = h('div', { className: 'jp-CellhopVolumes-uploads' });
    this.errorEl = h('div', { className: 'jp-CellhopPanel-error', 'data-error': 'volumes', role: 'alert' });
    const name = h('input', { className: 'jp-CellhopVolumes-newName', placeholder: 'new volume', 'aria-label': 'Volume name' }) as HTMLInputElement;
    const quota = h('input', { className: 'jp-CellhopVolumes-newQuota', placeholder: 'quota: 10G', 'aria-label': 'Quota (optional)' }) as HTMLInputElement;
    this.createForm = h(
      'form',
      { className: 'jp-CellhopVolumes-create' },
      name,
      quota,
      h('button', { className: 'jp-CellhopPanel-button', type: 'submit', 'data-action': 'create-volume' }, 'Create')
    );
    this.createForm.onsubmit = e => {
      e.preventDefault();
      void this.createVolume(name, quota);
    };
    this.node.addEventListener('dragenter', e => this.onDrag(e));
    this.node.addEventListener('dragover', e => this.onDrag(e));
    this.node.addEventListener('dragleave', e => {
      if (!this.node.contains(e.relatedTarget as Node | null)) {
        this.node.classList.remove('jp-mod-dropTarget');
      }
    });
    this.node.addEventListener('drop', e => this.onDrop(e));
    this.render();
  }

  readonly node: HTMLElement;
  /** The volume being browsed (null: the list of volumes), and the folder inside it. */
  volume: string | null = null;
  /** How many refreshes have started: each one shows what it read only if no newer one has started. */
  private refreshes = 0;
  folder = '';

  /** Re-read what is shown: the volumes, or the folder and usage of the one browsed. */
  async refresh(): Promise<void> {
    const volume = this.volume;
    const folder = this.folder;
    // Refreshes overlap (opening the list, then creating a volume): only the newest may show what it
    // read, or an older answer arriving last would put back a list without the new volume.
    const generation = ++this.refreshes;
    try {
      if (volume === null) {
        const volumes = parseVolumes(await this.options.api.request(['volumes']));
        if (generation !== this.refreshes) {
          return;
        }
        this.volumes = volumes;
        this.loaded = true;
      } else {
        const [listing, usage] = await Promise.all([
          this.options.api.files(volume, folder),
          this.options.api.volumeUsage(volume)
        ]);
        if (generation !== this.refreshes || volume !== this.volume || folder !== this.folder) {
          return; // the user moved on meanwhile, or a newer refresh is under way
        }
        this.entries = parseEntries(listing);
        this.usage = parseUsage(usage);
      }
      this.render();
    } catch (err) {
      if (volume === null && err instanceof CellhopApiError && err.status === 404) {
        this.node.replaceChildren(h('div', { className: 'jp-CellhopPanel-empty' }, 'This server does not serve volumes yet.'));
        return;
      }
      if (volume !== null && err instanceof CellhopApiError && err.status === 404 && folder) {
        this.folder = parentPath(folder); // the folder went away: show the one above
        this.showError(message(err));
        return this.refresh();
      }
      this.render();
      this.showError(`Could not list ${volume === null ? 'volumes' : volume}: ${message(err)}`);
    }
  }

  /** Browse `folder` of `volume` (null: back to the list of volumes). */
  open(volume: string | null, folder = ''): Promise<void> {
    this.volume = volume;
    this.folder = folder;
    this.entries = [];
    this.usage = null;
    this.showError(null);
    this.render();
    return this.refresh();
  }

  private showError(text: string | null): void {
    this.errorEl.textContent = text ?? '';
    this.errorEl.hidden = !text;
  }

  private render(): void {
    // the new-volume form stays in place (its focus and what is typed survive a refresh landing meanwhile)
    replaceKeeping(this.node, this.volume === null ? this.renderList() : this.renderFolder(this.volume));
  }

  private renderList(): HTMLElement[] {
    const items = this.volumes.map(v => this.volumeRow(v));
    return [
      items.length
        ? h('ul', { className: 'jp-CellhopVolumes-list' }, ...items)
        : h('div', { className: 'jp-CellhopPanel-empty' }, this.loaded ? 'No volumes yet.' : 'Loading…'),
      this.createForm,
      this.errorEl
    ];
  }

  private volumeRow(v: VolumeInfo): HTMLElement {
    const open = h('button', { className: 'jp-CellhopVolumes-open', type: 'button', title: `Browse ${v.name}` }, v.name);
    open.onclick = () => void this.open(v.name);
    const mounts = v.mountedBy.length
      ? h('span', { className: 'jp-CellhopVolumes-mounts', title: v.mountedBy.map(m => `${m.owner} at ${m.path}`).join('\n') },
          `mounted by ${v.mountedBy.length}`)
      : null;
    const del = button('Delete', 'delete-volume', () => void this.deleteVolume(v), { title: `Delete volume ${v.name}` });
    return h(
      'li',
      { className: 'jp-CellhopVolumes-volume', 'data-name': v.name },
      h('div', { className: 'jp-CellhopVolumes-volumeTitle' }, open, mounts, h('span', { className: 'jp-CellhopPanel-spacer' }), del),
      usageMeter(v.usage, v.quota)
    );
  }

  private renderFolder(volume: string): HTMLElement[] {
    const crumbs = h(
      'nav',
      { className: 'jp-CellhopVolumes-crumbs', 'aria-label': 'Folder' },
      this.crumb('Volumes', () => void this.open(null), 'volumes')
    );
    for (const c of breadcrumbs(volume, this.folder)) {
      crumbs.append(h('span', { className: 'jp-CellhopVolumes-sep' }, '›'), this.crumb(c.label, () => void this.open(volume, c.path), c.path));
    }
    const toolbar = h(
      'div',
      { className: 'jp-CellhopPanel-actions' },
      button('Upload…', 'upload', () => this.fileInput.click(), { title: 'Upload files into this folder' }),
      button('New folder', 'mkdir', () => void this.makeFolder()),
      this.folder ? button('Up', 'up', () => void this.open(volume, parentPath(this.folder))) : null,
      this.fileInput
    );
    const rows = this.entries.map(e => this.entryRow(volume, e));
    return [
      crumbs,
      this.usage ? usageMeter(this.usage.bytes, this.usage.quota, this.usage.files) : h('div', {}),
      toolbar,
      this.errorEl,
      this.uploadsEl,
      h(
        'div',
        { className: 'jp-CellhopVolumes-drop', 'data-volume': volume, 'data-path': this.folder },
        rows.length
          ? h('ul', { className: 'jp-CellhopVolumes-entries' }, ...rows)
          : h('div', { className: 'jp-CellhopPanel-empty' }, 'This folder is empty.'),
        h('div', { className: 'jp-CellhopVolumes-hint' }, 'Drop files here to upload them into this folder.')
      )
    ];
  }

  private crumb(label: string, onClick: () => void, path: string): HTMLElement {
    const el = h('button', { className: 'jp-CellhopVolumes-crumb', type: 'button', 'data-path': path }, label);
    el.onclick = onClick;
    return el;
  }

  private entryRow(volume: string, e: VolumeEntry): HTMLElement {
    const name =
      e.type === 'dir'
        ? h('button', { className: 'jp-CellhopVolumes-open', type: 'button', title: `Open ${e.path}` }, `${e.name}/`)
        : h('span', { className: 'jp-CellhopVolumes-name', title: e.path }, e.type === 'link' ? `${e.name} (link)` : e.name);
    if (e.type === 'dir') {
      name.onclick = () => void this.open(volume, e.path);
    }
    const actions: HTMLElement[] = [];
    if (e.type === 'file') {
      actions.push(
        h(
          'a',
          {
            className: 'jp-CellhopPanel-button',
            'data-action': 'download',
            href: this.options.api.downloadUrl(volume, e.path),
            download: e.name,
            title: `Download ${e.name}`
          },
          'Download'
        )
      );
    }
    actions.push(button('Delete', 'delete', () => void this.deleteEntry(volume, e), { title: `Delete ${e.path}` }));
    return h(
      'li',
      { className: 'jp-CellhopVolumes-entry', 'data-path': e.path, 'data-type': e.type },
      name,
      h(
        'span',
        { className: 'jp-CellhopVolumes-meta' },
        [e.type === 'file' ? formatBytes(e.size) : e.type === 'dir' ? 'folder' : 'link', e.modified ? `${formatAge(Date.now() / 1000 - e.modified)} ago` : '']
          .filter(Boolean)
          .join(' · ')
      ),
      h('span', { className: 'jp-CellhopPanel-actions' }, ...actions)
    );
  }

  private async createVolume(name: HTMLInputElement, quota: HTMLInputElement): Promise<void> {
    const form = checkVolumeForm(name.value, quota.value);
    if (!form.ok) {
      this.showError(form.error);
      return;
    }
    try {
      await this.options.api.createVolume(form.body);
      name.value = '';
      quota.value = '';
      this.showError(null);
      await this.refresh();
    } catch (err) {
      this.showError(`Could not create volume ${form.body.name}: ${message(err)}`);
    }
  }

  private async deleteVolume(v: VolumeInfo): Promise<void> {
    const sure = await this.options.confirm(
      `Delete volume ${v.name}?`,
      `Volume ${v.name} and its ${formatBytes(v.usage)} of files are deleted for good.`,
      'Delete'
    );
    if (!sure) {
      return;
    }
    try {
      await this.options.api.request(['volumes', v.name], { method: 'DELETE' });
      this.showError(null);
    } catch (err) {
      this.showError(`Could not delete volume ${v.name}: ${message(err)}`);
    }
    await this.refresh();
  }

  private async deleteEntry(volume: string, e: VolumeEntry): Promise<void> {
    const dir = e.type === 'dir';
    const sure = await this.options.confirm(
      `Delete ${dir ? 'folder' : 'file'} ${e.name}?`,
      dir ? `Folder ${e.path} of volume ${volume} and everything in it are deleted.` : `${e.path} of volume ${volume} is deleted.`,
      'Delete'
    );
    if (!sure) {
      return;
    }
    try {
      await this.options.api.deleteFile(volume, e.path, dir);
      this.showError(null);
    } catch (err) {
      this.showError(`Could not delete ${e.path}: ${message(err)}`);
    }
    await this.refresh();
  }

  private async makeFolder(): Promise<void> {
    const volume = this.volume;
    const name = (await this.options.prompt('New folder', 'folder name'))?.trim();
    if (!name || volume === null) {
      return;
    }
    const bad = fileNameError(name);
    if (bad) {
      this.showError(bad);
      return;
    }
    try {
      await this.options.api.mkdir(volume, joinPath(this.folder, name));
      this.showError(null);
    } catch (err) {
      this.showError(`Could not make folder ${name}: ${message(err)}`);
    }
    await this.refresh();
  }

  private onDrag(e: DragEvent): void {
    if (this.volume === null || !e.dataTransfer?.types.includes('Files')) {
      return;
    }
    e.preventDefault();
    e.stopPropagation();
    e.dataTransfer.dropEffect = 'copy';
    this.node.classList.add('jp-mod-dropTarget');
  }

  private onDrop(e: DragEvent): void {
    this.node.classList.remove('jp-mod-dropTarget');
    if (this.volume === null || !e.dataTransfer) {
      return;
    }
    e.preventDefault();
    e.stopPropagation();
    const items = [...(e.dataTransfer.items ?? [])];
    const folders = items.filter(i => i.kind === 'file' && i.webkitGetAsEntry?.()?.isDirectory).map(i => i.webkitGetAsEntry()!.name);
    const files = [...e.dataTransfer.files].filter(f => !folders.includes(f.name));
    if (folders.length) {
      this.showError(`Folders are not uploaded (${folders.join(', ')}); drop the files inside them, or make the folder first.`);
    }
    void this.uploadFiles(files);
  }

  /** Upload `files` into the folder shown, one after another, then re-read it. */
  async uploadFiles(files: File[]): Promise<void> {
    const volume = this.volume;
    const folder = this.folder;
    if (volume === null || !files.length) {
      return;
    }
    const failures: string[] = [];
    for (const file of files) {
      const bad = fileNameError(file.name);
      if (bad) {
        failures.push(bad);
        continue;
      }
      const row: UploadRow = { id: ++this.uploadId, name: file.name, sent: 0, total: file.size };
      this.uploads.set(row.id, row);
      this.renderUploads();
      try {
        const upload = this.options.api.upload(volume, joinPath(folder, file.name), file, sent => {
          row.sent = sent;
          this.renderUploads();
        });
        await upload.done;
      } catch (err) {
        let text = message(err);
        const over = quotaExcess(this.usage, file.size);
        if (err instanceof CellhopApiError && err.status === 0 && over > 0) {
          text = `it would pass the volume's quota by ${formatBytes(over)} (the server closed the connection)`;
        }
        failures.push(`Could not upload ${file.name}: ${text}`);
      } finally {
        this.uploads.delete(row.id);
        this.renderUploads();
      }
    }
    if (volume === this.volume) {
      await this.refresh();
    }
    this.showError(failures.length ? failures.join('\n') : null);
  }

  private renderUploads(): void {
    this.uploadsEl.replaceChildren(
      ...[...this.uploads.values()].map(u => {
        const fraction = u.total ? Math.min(1, u.sent / u.total) : 0;
        const fill = h('div', { className: 'jp-CellhopPanel-barFill' });
        fill.style.width = `${Math.round(fraction * 100)}%`;
        return h(
          'div',
          { className: 'jp-CellhopVolumes-upload', 'data-name': u.name },
          h('span', {}, `uploading ${u.name}… ${Math.round(fraction * 100)}% of ${formatBytes(u.total)}`),
          h('div', { className: 'jp-CellhopPanel-bar' }, fill)
        );
      })
    );
  }

  private readonly createForm: HTMLElement;
  private readonly fileInput: HTMLInputElement;
  private readonly uploadsEl: HTMLElement;
  private readonly errorEl: HTMLElement;
  private volumes: VolumeInfo[] = [];
  private loaded = false;
  private entries: VolumeEntry[] = [];
  private usage: VolumeUsage | null = null;
  private readonly uploads = new Map<number, UploadRow>();
  private uploadId = 0;
}
