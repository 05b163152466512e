/**
 * The Secrets section: names and keys (the API gives no values), a form to create one
 * (name, KEY / VALUE rows with password inputs), delete with a confirmation.
 *
 * Values live only in the form's password inputs until the POST; after it, the form is
 * cleared, and nothing the section renders ever holds a value.
 */

import { CellhopApiError } from './api';
import { button, h, message } from './dom';
import { checkSecretForm, parseSecrets, SecretInfo, SecretRow } from './storage';
import { StorageOptions } from './volumes';

export class SecretsView {
  constructor(private readonly options: StorageOptions) {
    this.node = h('div', { className: 'jp-CellhopPanel-secrets' });
    this.listEl = h('div', { className: 'jp-CellhopSecrets-listWrap' }, h('div', { className: 'jp-CellhopPanel-empty' }, 'Loading…'));
    this.nameInput = h('input', {
      className: 'jp-CellhopSecrets-name',
      placeholder: 'secret name, e.g. hf',
      'aria-label': 'Secret name',
      autocomplete: 'off'
    }) as HTMLInputElement;
    this.rowsEl = h('div', { className: 'jp-CellhopSecrets-rows' });
    this.replaceInput = h('input', { type: 'checkbox', className: 'jp-CellhopSecrets-replace' }) as HTMLInputElement;
    this.errorEl = h('div', { className: 'jp-CellhopPanel-error', 'data-error': 'secrets', role: 'alert' });
    this.errorEl.hidden = true;
    this.form = h(
      'form',
      { className: 'jp-CellhopSecrets-form', autocomplete: 'off' },
      h('div', { className: 'jp-CellhopSecrets-formTitle' }, 'New secret'),
      this.nameInput,
      this.rowsEl,
      h(
        'div',
        { className: 'jp-CellhopPanel-actions' },
        button('+ Variable', 'add-row', () => this.addRow(true)),
        h('label', { className: 'jp-CellhopSecrets-replaceLabel', title: 'Overwrite a secret of this name' }, this.replaceInput, ' replace'),
        h('span', { className: 'jp-CellhopPanel-spacer' }),
        h('button', { className: 'jp-CellhopPanel-button', type: 'submit', 'data-action': 'create-secret' }, 'Create')
      ),
      this.errorEl
    );
    this.form.onsubmit = e => {
      e.preventDefault();
      void this.create();
    };
    this.addRow();
    this.node.append(this.listEl, this.form);
  }

  readonly node: HTMLElement;

  async refresh(): Promise<void> {
    try {
      this.secrets = parseSecrets(await this.options.api.request(['secrets']));
      this.renderList();
    } catch (err) {
      const missing = err instanceof CellhopApiError && err.status === 404;
      this.listEl.replaceChildren(
        h('div', { className: 'jp-CellhopPanel-empty' }, missing ? 'This server does not serve secrets yet.' : `Could not list secrets: ${message(err)}`)
      );
    }
  }

  /** The form's rows as typed (values included: they go to the POST and nowhere else). */
  private rows(): SecretRow[] {
    return [...this.rowsEl.querySelectorAll('.jp-CellhopSecrets-row')].map(row => ({
      key: (row.querySelector('.jp-CellhopSecrets-key') as HTMLInputElement).value,
      value: (row.querySelector('.jp-CellhopSecrets-value') as HTMLInputElement).value
    }));
  }

  private addRow(focus = false): void {
    const key = h('input', { className: 'jp-CellhopSecrets-key', placeholder: 'KEY', 'aria-label': 'Key', autocomplete: 'off', spellcheck: 'false' });
    const value = h('input', {
      className: 'jp-CellhopSecrets-value',
      type: 'password',
      placeholder: 'value',
      'aria-label': 'Value',
      autocomplete: 'new-password'
    });
    const row = h('div', { className: 'jp-CellhopSecrets-row' }, key, value);
    row.append(
      button('×', 'remove-row', () => {
        row.remove();
        if (!this.rowsEl.children.length) {
          this.addRow();
        }
      }, { title: 'Remove this variable' })
    );
    this.rowsEl.append(row);
    if (focus) {
      key.focus();
    }
  }

  /** Empty the form: no value stays in the page after a secret is made. */
  private clearForm(): void {
    this.nameInput.value = '';
    this.replaceInput.checked = false;
    this.rowsEl.replaceChildren();
    this.addRow();
  }

  private showError(text: string | null): void {
    this.errorEl.textContent = text ?? '';
    this.errorEl.hidden = !text;
  }

  private async create(): Promise<void> {
    const form = checkSecretForm(this.nameInput.value, this.rows());
    if (!form.ok) {
      this.showError(form.error);
      return;
    }
    try {
      await this.options.api.createSecret(form.name, form.values, this.replaceInput.checked);
      this.clearForm();
      this.showError(null);
    } catch (err) {
      this.showError(`Could not create secret ${form.name}: ${message(err)}`);
    }
    await this.refresh();
  }

  private async remove(secret: SecretInfo): Promise<void> {
    const sure = await this.options.confirm(
      `Delete secret ${secret.name}?`,
      `Containers started later cannot use ${secret.name} (${secret.keys.join(', ')}); running ones keep their environment.`,
      'Delete'
    );
    if (!sure) {
      return;
    }
    try {
      await this.options.api.deleteSecret(secret.name);
      this.showError(null);
    } catch (err) {
      this.showError(`Could not delete secret ${secret.name}: ${message(err)}`);
    }
    await this.refresh();
  }

  private renderList(): void {
    if (!this.secrets.length) {
      this.listEl.replaceChildren(h('div', { className: 'jp-CellhopPanel-empty' }, 'No secrets yet.'));
      return;
    }
    this.listEl.replaceChildren(
      h(
        'ul',
        { className: 'jp-CellhopSecrets-list' },
        ...this.secrets.map(s =>
          h(
            'li',
            { className: 'jp-CellhopSecrets-secret', 'data-name': s.name },
            h(
              'div',
              { className: 'jp-CellhopVolumes-volumeTitle' },
              h('span', { className: 'jp-CellhopSecrets-secretName' }, s.name),
              s.session ? h('span', { className: 'jp-CellhopPanel-badge', title: "Kept in the server's memory only" }, 'session') : null,
              h('span', { className: 'jp-CellhopPanel-spacer' }),
              button('Delete', 'delete-secret', () => void this.remove(s), { title: `Delete secret ${s.name}` })
            ),
            h('div', { className: 'jp-CellhopSecrets-keys' }, ...s.keys.map(k => h('code', { className: 'jp-CellhopSecrets-keyName' }, k)))
          )
        )
      )
    );
  }

  private readonly listEl: HTMLElement;
  private readonly form: HTMLElement;
  private readonly nameInput: HTMLInputElement;
  private readonly rowsEl: HTMLElement;
  private readonly replaceInput: HTMLInputElement;
  private readonly errorEl: HTMLElement;
  private secrets: SecretInfo[] = [];
}
