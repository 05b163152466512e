/**
 * cellhop's JupyterLab extension: a left-sidebar panel with the host's GPUs (live), the
 * containers cellhop runs (stop, logs), and its images and volumes.
 */

import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { Dialog, ICommandPalette, InputDialog, Notification, showDialog } from '@jupyterlab/apputils';
import { ServerConnection } from '@jupyterlab/services';
import { LabIcon } from '@jupyterlab/ui-components';

import { CellhopApi } from './api';
import { logWidget } from './logview';
import { CellhopPanel } from './panel';
import { notebookRunRequest } from './runs';
import { SessionInfo } from './state';
import { EventStream, eventsUrl } from './stream';

const ICON_SVG = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
<g class="jp-icon3" fill="#616161"><path d="M6 6h12v12H6zM8 8v8h8V8z"/>
<path d="M9 2h2v3H9zM13 2h2v3h-2zM9 19h2v3H9zM13 19h2v3h-2zM2 9h3v2H2zM2 13h3v2H2zM19 9h3v2h-3zM19 13h3v2h-3z"/></g></svg>`;

export const cellhopIcon = new LabIcon({ name: 'cellhop:gpu', svgstr: ICON_SVG });

const COMMANDS = {
  open: 'cellhop:open-panel',
  logs: 'cellhop:container-logs',
  terminal: 'cellhop:container-terminal',
  runOnGpu: 'cellhop:run-notebook-on-gpu'
};

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'cellhop-labextension:panel',
  description: "cellhop's sidebar: GPUs, containers, images, volumes and secrets",
  autoStart: true,
  optional: [ILayoutRestorer, ICommandPalette],
  activate: (app: JupyterFrontEnd, restorer: ILayoutRestorer | null, palette: ICommandPalette | null) => {
    const settings = ServerConnection.makeSettings();
    const api = new CellhopApi(settings);
    let sessions: SessionInfo[] = [];
    const queueNotes = new Map<string, string>(); // container id -> its 'waits for a GPU' notification

    const panel = new CellhopPanel({
      api,
      createStream: (onEvent, onStatus) =>
        new EventStream({
          url: () => eventsUrl(settings as { wsUrl: string; token?: string; appendToken?: boolean }),
          onEvent: event => {
            const asked = event as { type: string; name?: string };
            if (asked.type === 'terminal' && asked.name) {
              // `%gpu --terminal` (a kernel asked the server for a terminal inside its container)
              void app.commands.execute('terminal:open', { name: asked.name });
            }
            onEvent(event);
          },
          onStatus
        }),
      sessions: () => sessions,
      confirmStop: async row => {
        const result = await showDialog({
          title: 'Stop this container?',
          body: `Container ${row.id.slice(0, 8)} (${row.gpus}, ${row.notebook ?? row.owner}) stops; the state of its remote cells goes with it.`,
          buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Stop' })]
        });
        return result.button.accept;
      },
      openLogs: id => void app.commands.execute(COMMANDS.logs, { id }),
      openTerminal: id => void app.commands.execute(COMMANDS.terminal, { id }),
      queued: (id, text, cancel) => {
        const shown = queueNotes.get(id);
        if (text === null) {
          if (shown) {
            Notification.dismiss(shown);
            queueNotes.delete(id);
          }
          return;
        }
        const options = {
          autoClose: false as const,
          actions: [{ label: 'Cancel the kernel start', callback: cancel, displayType: 'warn' as const }]
        };
        if (shown) {
          Notification.update({ id: shown, message: text, type: 'info', ...options });
        } else {
          queueNotes.set(id, Notification.info(text, options));
        }
      },
      notify: message => void Notification.error(message, { autoClose: 8000 }),
      warn: message => void Notification.warning(message, { autoClose: 15000 }),
      confirm: async (title, body, accept) => {
        const result = await showDialog({
          title,
          body,
          buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: accept })]
        });
        return result.button.accept;
      },
      prompt: async (title, placeholder) => {
        const result = await InputDialog.getText({ title, placeholder, okLabel: 'Create' });
        return result.button.accept ? result.value : null;
      }
    });
    panel.title.icon = cellhopIcon;
    app.shell.add(panel, 'left', { rank: 600 });
    restorer?.add(panel, panel.id);

    const manager = app.serviceManager.sessions;
    const readSessions = () => {
      sessions = [...manager.running()]
        .filter(s => s.kernel)
        .map(s => ({ kernelId: s.kernel!.id, path: s.path }));
      panel.renderContainers();
    };
    manager.runningChanged.connect(readSessions);
    readSessions();

    // A %%remote status line offers its container's GPUs: a click on it opens this panel.
    document.addEventListener('click', event => {
      const target = (event.target as Element | null)?.closest?.('.cellhop-status [data-cellhop-container]');
      if (target) {
        app.shell.activateById(panel.id);
        panel.highlightContainer(target.getAttribute('data-cellhop-container') ?? '');
      }
    });

    app.commands.addCommand(COMMANDS.open, {
      label: 'Show cellhop GPUs and containers',
      icon: cellhopIcon,
      execute: () => app.shell.activateById(panel.id)
    });
    app.commands.addCommand(COMMANDS.logs, {
      label: 'Show a cellhop container log',
      execute: args => {
        const id = String(args.id ?? '');
        const existing = document.getElementById(`cellhop-logs-${id}`);
        if (existing) {
          app.shell.activateById(`cellhop-logs-${id}`);
          return;
        }
        app.shell.add(logWidget(api, id, cellhopIcon), 'main');
      }
    });
    // "Run on GPU": the open notebook (as it is in the editor, outputs dropped) as a run the server owns
    const openNotebook = () => {
      const widget = app.shell.currentWidget as { context?: { path: string; model: { toJSON(): unknown } } } | null;
      return widget?.context?.path?.endsWith('.ipynb') ? widget.context : null;
    };
    app.commands.addCommand(COMMANDS.runOnGpu, {
      label: 'Run Notebook on GPU (cellhop)',
      icon: cellhopIcon,
      isEnabled: () => openNotebook() !== null,
      execute: async () => {
        const context = openNotebook();
        if (!context) {
          return;
        }
        const asked = await InputDialog.getText({
          title: `Run ${context.path} on a GPU`,
          label: 'GPU (e.g. H100, A100:2; empty for none). The whole notebook runs in a container the server owns.',
          text: 'H100',
          okLabel: 'Run'
        });
        if (!asked.button.accept) {
          return;
        }
        try {
          const run = await api.request<{ id: string }>(['runs'], {
            method: 'POST',
            body: JSON.stringify(notebookRunRequest(context.path, context.model.toJSON(), asked.value ?? ''))
          });
          Notification.info(`Run ${run.id} of ${context.path} queued: the Runs section follows it.`, { autoClose: 8000 });
          app.shell.activateById(panel.id);
          void panel.runs.refresh();
        } catch (err) {
          void Notification.error(`Could not run ${context.path}: ${(err as Error).message}`, { autoClose: 8000 });
        }
      }
    });
    palette?.addItem({ command: COMMANDS.runOnGpu, category: 'cellhop' });
    app.commands.addCommand(COMMANDS.terminal, {
      label: 'Open a terminal inside a cellhop container',
      execute: async args => {
        // a terminal of the Jupyter server whose shell runs inside the container (docs/api.md, "Terminals")
        const id = String(args.id ?? '');
        try {
          const made = await api.request<{ name: string }>(['containers', id, 'terminal'], {
            method: 'POST',
            body: '{}'
          });
          await app.commands.execute('terminal:open', { name: made.name });
        } catch (err) {
          void Notification.error(`Could not open a terminal in container ${id.slice(0, 8)}: ${(err as Error).message}`, {
            autoClose: 8000
          });
        }
      }
    });
  }
};

export default plugin;
